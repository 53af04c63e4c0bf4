use crate::*;
use tonic::Code;

#[tokio::test]
async fn the_ledger_derives_on_hand_and_refuses_going_below_zero() {
    let mut h = start().await;
    node(&mut h.client, "acme", "DC1").await;
    node(&mut h.client, "acme", "DC2").await;
    item(&mut h.client, "acme", "SKU-1").await;
    let c = &mut h.client;

    let r = movement(c, "m1", MovementKind::Receipt, "DC1", "SKU-1", |m| {
        m.quantity = 10
    })
    .await
    .unwrap();
    assert_eq!(r.on_hand_after, 10);
    // A replay changes nothing.
    let again = movement(c, "m1", MovementKind::Receipt, "DC1", "SKU-1", |m| {
        m.quantity = 10
    })
    .await
    .unwrap();
    assert_eq!(again, r);
    let adj = movement(c, "m2", MovementKind::Adjustment, "DC1", "SKU-1", |m| {
        m.quantity = -3;
        m.reason = "found broken packaging".into();
    })
    .await
    .unwrap();
    assert_eq!(adj.on_hand_after, 7);
    let count = movement(c, "m3", MovementKind::CycleCount, "DC1", "SKU-1", |m| {
        m.counted_quantity = Some(9)
    })
    .await
    .unwrap();
    assert_eq!((count.quantity, count.on_hand_after), (2, 9));

    let err = movement(c, "m4", MovementKind::Damage, "DC1", "SKU-1", |m| {
        m.quantity = -20;
        m.reason = "flood".into();
    })
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(reason(&err), "INSUFFICIENT_ON_HAND");

    let err = movement(c, "m5", MovementKind::Adjustment, "DC1", "SKU-1", |m| {
        m.quantity = 1
    })
    .await
    .unwrap_err();
    assert_eq!(fields(&err), ["movement.reason"]);
    // A count that gives only `quantity` (output only for counts) is no
    // count of zero: it is refused and the 9 stay.
    let err = movement(c, "m5b", MovementKind::CycleCount, "DC1", "SKU-1", |m| {
        m.quantity = -3
    })
    .await
    .unwrap_err();
    assert_eq!(fields(&err), ["movement.counted_quantity"]);
    let err = movement(c, "m6", MovementKind::Receipt, "DC1", "NOPE", |m| {
        m.quantity = 1
    })
    .await
    .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err)),
        (Code::NotFound, "ITEM_NOT_FOUND".into())
    );
    let err = movement(c, "m7", MovementKind::Receipt, "DC9", "SKU-1", |m| {
        m.quantity = 1
    })
    .await
    .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err)),
        (Code::NotFound, "NODE_NOT_FOUND".into())
    );
    let err = movement(c, "m8", MovementKind::Receipt, "DC1", "SKU-1", |m| {
        m.quantity = 0
    })
    .await
    .unwrap_err();
    assert_eq!(fields(&err), ["movement.quantity"]);
    // A transfer to where it starts is refused; two missing nodes are
    // missing, not also the same node.
    let transfer = |from: &str, to: &str| TransferStockRequest {
        request_id: rid(),
        from_node_id: from.into(),
        to_node_id: to.into(),
        sku: "SKU-1".into(),
        quantity: 1,
        ..Default::default()
    };
    let to_itself = transfer("DC1", "DC1");
    let err = c
        .transfer_stock(authed("acme", to_itself))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["to_node_id"]);
    assert!(err.message().contains("must differ"), "{err:?}");
    let nowhere = transfer("", "");
    let err = c.transfer_stock(authed("acme", nowhere)).await.unwrap_err();
    assert_eq!(fields(&err), ["from_node_id", "to_node_id"]);

    let t = c
        .transfer_stock(authed(
            "acme",
            TransferStockRequest {
                request_id: "t1".into(),
                from_node_id: "DC1".into(),
                to_node_id: "DC2".into(),
                sku: "SKU-1".into(),
                quantity: 4,
                reason: "rebalance".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let (out, arrived) = (t.transfer_out.unwrap(), t.transfer_in.unwrap());
    assert_eq!((out.on_hand_after, arrived.on_hand_after), (5, 4));
    // Both legs of an instant transfer happened at one moment.
    assert!(out.occur_time.is_some());
    assert_eq!(out.occur_time, arrived.occur_time);

    let levels = stock_levels(c, "", "SKU-1").await;
    let on_hand: Vec<(String, i64)> = levels
        .iter()
        .map(|l| (l.node_id.clone(), l.on_hand))
        .collect();
    assert_eq!(on_hand, [("DC1".to_string(), 5), ("DC2".to_string(), 4)]);
    assert_eq!(available(c, "acme", "SKU-1").await.available, 9);

    let moves = c
        .list_movements(authed(
            "acme",
            ListMovementsRequest {
                sku: "SKU-1".into(),
                page_size: 2,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(moves.movements.len(), 2);
    assert_eq!(
        moves.movements[0].kind,
        MovementKind::TransferIn as i32,
        "newest first"
    );
    let rest = c
        .list_movements(authed(
            "acme",
            ListMovementsRequest {
                sku: "SKU-1".into(),
                page_size: 10,
                page_token: moves.next_page_token,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.movements.len(), 3, "receipt, adjustment, count");
    // Each transfer's two legs, and only they, carry its reference: the
    // request's, or the caller's document.
    let again = |request_id: &str, reference: &str| TransferStockRequest {
        request_id: request_id.into(),
        reference: reference.into(),
        ..transfer("DC1", "DC2")
    };
    for req in [again("t2", ""), again("t3", "replenishment/R-7")] {
        c.transfer_stock(authed("acme", req)).await.unwrap();
    }
    let legs = async |c: &mut Client, reference: &str| -> Vec<(String, i64)> {
        let req = ListMovementsRequest {
            reference: reference.into(),
            ..Default::default()
        };
        let page = c.list_movements(authed("acme", req)).await.unwrap();
        let page = page.into_inner().movements;
        page.iter()
            .map(|m| (m.node_id.clone(), m.quantity))
            .collect()
    };
    let both = [("DC2".to_string(), 1), ("DC1".to_string(), -1)];
    let first = [("DC2".to_string(), 4), ("DC1".to_string(), -4)];
    assert_eq!(legs(c, "stockTransfers/t1").await, first);
    assert_eq!(legs(c, "stockTransfers/t2").await, both);
    assert_eq!(legs(c, "replenishment/R-7").await, both);
    let long = TransferStockRequest {
        reference: "R".repeat(201),
        ..transfer("DC1", "DC2")
    };
    let err = c.transfer_stock(authed("acme", long)).await.unwrap_err();
    assert_eq!(fields(&err), ["reference"]);
    // When it happened: a time the ledger can show, not days ahead of now
    // (a WMS whose clock is set wrong), while a day of drift is taken.
    let at = |seconds: i64, nanos| Some(prost_types::Timestamp { seconds, nanos });
    let now = chrono::Utc::now().timestamp();
    for (id, occur_time) in [("m9", at(now + 3 * 86_400, 0)), ("m10", at(now, -1))] {
        let err = movement(c, id, MovementKind::Receipt, "DC1", "SKU-1", |m| {
            m.quantity = 1;
            m.occur_time = occur_time;
        })
        .await
        .unwrap_err();
        assert_eq!(fields(&err), ["movement.occur_time"], "{err:?}");
    }
    let m = movement(c, "m11", MovementKind::Receipt, "DC1", "SKU-1", |m| {
        m.quantity = 1;
        m.occur_time = at(now + 3_600, 0);
    })
    .await
    .unwrap();
    assert_eq!(m.occur_time.unwrap().seconds, now + 3_600);
}

#[tokio::test]
async fn lot_tracked_items_need_lots() {
    let mut h = start().await;
    node(&mut h.client, "acme", "DC1").await;
    h.client
        .create_item(authed(
            "acme",
            CreateItemRequest {
                request_id: rid(),
                item: Some(Item {
                    sku: "MILK".into(),
                    lot_tracked: true,
                    expiry_tracked: true,
                    ..Default::default()
                }),
            },
        ))
        .await
        .unwrap();
    let c = &mut h.client;
    let err = movement(c, "a", MovementKind::Receipt, "DC1", "MILK", |m| {
        m.quantity = 5
    })
    .await
    .unwrap_err();
    assert_eq!(fields(&err), ["movement.lot", "movement.expiry_date"]);
    let ok = movement(c, "b", MovementKind::Receipt, "DC1", "MILK", |m| {
        m.quantity = 5;
        m.lot = "L42".into();
        m.expiry_date = "2027-03-01".into();
    })
    .await
    .unwrap();
    assert_eq!(ok.on_hand_after, 5);
    // A transfer names the lot too; its violations name its own fields.
    node(c, "acme", "DC2").await;
    let transfer = |lot: &str, quantity: i64| TransferStockRequest {
        request_id: rid(),
        from_node_id: "DC1".into(),
        to_node_id: "DC2".into(),
        sku: "MILK".into(),
        lot: lot.into(),
        quantity,
        ..Default::default()
    };
    let err = c
        .transfer_stock(authed("acme", transfer("", 1)))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["lot"], "not movement.lot");
    let err = c
        .transfer_stock(authed("acme", transfer("L42", i64::MAX)))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["quantity"], "bad input, not short stock");
    let moved = c
        .transfer_stock(authed("acme", transfer("L42", 2)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(moved.transfer_in.unwrap().expiry_date, "2027-03-01");
    // A lot is a label: bounded, without control characters, wherever it
    // is named.
    for (i, lot) in ["L".repeat(101), "L\n1".into(), "  ".into()]
        .into_iter()
        .enumerate()
    {
        let err = movement(
            c,
            &format!("e{i}"),
            MovementKind::Receipt,
            "DC1",
            "MILK",
            |m| {
                m.quantity = 1;
                m.lot = lot.clone();
                m.expiry_date = "2027-03-01".into();
            },
        )
        .await
        .unwrap_err();
        assert_eq!(fields(&err), ["movement.lot"], "{lot:?}");
        let err = c
            .transfer_stock(authed("acme", transfer(&lot, 1)))
            .await
            .unwrap_err();
        assert_eq!(fields(&err), ["lot"], "{lot:?}");
    }
    // A count that finds a lot the record has no units of brings it in
    // with its date, as a receipt would; a known lot keeps its own.
    let count = |lot: &'static str, expiry: &'static str| {
        move |m: &mut StockMovement| {
            m.counted_quantity = Some(4);
            m.lot = lot.into();
            m.expiry_date = expiry.into();
        }
    };
    let err = movement(
        c,
        "f",
        MovementKind::CycleCount,
        "DC1",
        "MILK",
        count("L43", ""),
    )
    .await
    .unwrap_err();
    assert_eq!(fields(&err), ["movement.expiry_date"]);
    movement(
        c,
        "g",
        MovementKind::CycleCount,
        "DC1",
        "MILK",
        count("L43", "2027-04-01"),
    )
    .await
    .unwrap();
    let known = movement(
        c,
        "h",
        MovementKind::CycleCount,
        "DC1",
        "MILK",
        count("L42", ""),
    )
    .await
    .unwrap();
    assert_eq!(known.expiry_date, "2027-03-01");

    // An item not kept by lot refuses a lot, except on a shipment: a WMS
    // reports one for every item it ships, and orders records a shipment
    // no reservation held any more by this call.
    item(c, "acme", "PLAIN").await;
    receive(c, "acme", "DC1", "PLAIN", 3).await;
    let err = movement(c, "c", MovementKind::Receipt, "DC1", "PLAIN", |m| {
        m.quantity = 1;
        m.lot = "L7".into();
    })
    .await
    .unwrap_err();
    assert_eq!(fields(&err), ["movement.lot"]);
    let shipped = movement(c, "d", MovementKind::Shipment, "DC1", "PLAIN", |m| {
        m.quantity = -1;
        m.lot = "L7".into();
    })
    .await
    .unwrap();
    assert_eq!((shipped.lot.as_str(), shipped.on_hand_after), ("", 2));
    // Its serial numbers are kept as they came, blank ones too, but follow
    // the label rule.
    let err = movement(c, "i", MovementKind::Receipt, "DC1", "PLAIN", |m| {
        m.quantity = 2;
        m.serial_numbers = vec!["".into(), "S".repeat(101)];
    })
    .await
    .unwrap_err();
    assert_eq!(fields(&err), ["movement.serial_numbers[1]"]);
}

#[tokio::test]
async fn a_snapshot_import_applies_good_rows_and_reports_bad_ones() {
    let mut h = start().await;
    node(&mut h.client, "acme", "DC1").await;
    item(&mut h.client, "acme", "A").await;
    item(&mut h.client, "acme", "B").await;
    item(&mut h.client, "acme", "C").await;
    receive(&mut h.client, "acme", "DC1", "A", 3).await;
    receive(&mut h.client, "acme", "DC1", "C", 5).await;
    use import_stock_snapshot_request::Part;
    let row = |node: &str, sku: &str, on_hand: i64| ImportStockSnapshotRequest {
        part: Some(Part::Row(SnapshotRow {
            node_id: node.into(),
            sku: sku.into(),
            on_hand,
            ..Default::default()
        })),
    };
    let msgs = vec![
        ImportStockSnapshotRequest {
            part: Some(Part::Header(SnapshotHeader {
                request_id: "snap-1".into(),
                source: "wms".into(),
                count_time: None,
            })),
        },
        row("DC1", "A", 10),
        row("DC1", "B", 4),
        row("DC1", "UNKNOWN", 1),
        row("DC1", "A", -1),
        // Two figures for one SKU at one node (bins, say): neither stands.
        row("DC1", "C", 2),
        row("DC1", "C", 9),
        // Beyond any count (it reached the gate, which lost track of B).
        row("DC1", "B", i64::MAX),
    ];
    let resp = h
        .client
        .import_stock_snapshot(authed("acme", tokio_stream::iter(msgs.clone())))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.rows_applied, 2);
    let bad: Vec<(i64, String)> = resp
        .errors
        .iter()
        .map(|e| (e.row_index, e.field.clone()))
        .collect();
    let want = [
        (2, "sku"),
        (3, "on_hand"),
        (4, "sku"),
        (5, "sku"),
        (6, "on_hand"),
    ];
    assert_eq!(bad, want.map(|(i, f)| (i, f.to_string())));
    assert!(
        resp.errors[2]
            .description
            .starts_with("rows 4, 5 all count C at DC1"),
        "{:?}",
        resp.errors[2]
    );
    assert_eq!(available(&mut h.client, "acme", "A").await.on_hand, 10);
    assert_eq!(available(&mut h.client, "acme", "B").await.on_hand, 4);
    assert_eq!(available(&mut h.client, "acme", "C").await.on_hand, 5);
    // The same import again changes nothing.
    let again = h
        .client
        .import_stock_snapshot(authed("acme", tokio_stream::iter(msgs)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, resp);
    let count = h
        .client
        .list_movements(authed(
            "acme",
            ListMovementsRequest {
                sku: "A".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .movements
        .len();
    assert_eq!(count, 2, "receipt and one count");
    // The source goes into every count's reason: bounded like one. Every
    // count happened at the header's time: not days ahead of now.
    let ahead = oms_runtime::time::to_timestamp(chrono::Utc::now() + chrono::Duration::days(3));
    for (source, count_time, field) in [
        ("w".repeat(201), None, "header.source"),
        ("wms".to_string(), Some(ahead), "header.count_time"),
    ] {
        let header = vec![ImportStockSnapshotRequest {
            part: Some(Part::Header(SnapshotHeader {
                request_id: rid(),
                source,
                count_time,
            })),
        }];
        let err = h
            .client
            .import_stock_snapshot(authed("acme", tokio_stream::iter(header)))
            .await
            .unwrap_err();
        assert_eq!(fields(&err), [field]);
    }
}

/// Lots of one lot-tracked SKU `T` at DC1, counted one unit each, in the
/// reverse of the order they apply in; row 0 counts an unknown SKU. More
/// than a chunk of rows counted in runs (1,000).
const LOTS: usize = 1450;

/// The lot of [`many_lots`] that applies last.
const LAST_LOT: &str = "L1449";

fn many_lots() -> Vec<SnapshotRow> {
    let mut rows = vec![SnapshotRow {
        node_id: "DC1".into(),
        sku: "NOPE".into(),
        on_hand: 1,
        ..Default::default()
    }];
    rows.extend((0..LOTS).rev().map(|i| SnapshotRow {
        node_id: "DC1".into(),
        sku: "T".into(),
        lot: format!("L{i:04}"),
        on_hand: 1,
        ..Default::default()
    }));
    rows
}

fn snapshot_msgs(request_id: &str, rows: Vec<SnapshotRow>) -> Vec<ImportStockSnapshotRequest> {
    use import_stock_snapshot_request::Part;
    let header = Part::Header(SnapshotHeader {
        request_id: request_id.into(),
        source: "wms".into(),
        count_time: None,
    });
    std::iter::once(header)
        .chain(rows.into_iter().map(Part::Row))
        .map(|part| ImportStockSnapshotRequest { part: Some(part) })
        .collect()
}

async fn lots_of_t(h: &mut Harness) {
    node(&mut h.client, "acme", "DC1").await;
    tracked_item(&mut h.client, "T", |i| i.lot_tracked = true).await;
}

/// Runs `body` (PL/pgSQL) in the transaction that counts the last lot of
/// [`many_lots`] to apply ([`LAST_LOT`]).
async fn at_last_lot(db: &TestDb, body: &str) {
    let when = format!("NEW.lot = '{LAST_LOT}'");
    crate::recovery::injected(db, "INSERT ON movements", &when, body).await
}

type Imported = Result<tonic::Response<ImportStockSnapshotResponse>, tonic::Status>;

/// Starts importing [`many_lots`] as `request_id`.
fn importing(c: &Client, request_id: &str) -> tokio::task::JoinHandle<Imported> {
    let mut c = c.clone();
    let msgs = snapshot_msgs(request_id, many_lots());
    tokio::spawn(async move {
        c.import_stock_snapshot(authed("acme", tokio_stream::iter(msgs)))
            .await
    })
}

/// A large import commits its rows a chunk at a time: a gate rebuild, and
/// the tenant's reservations waiting for it, or a shipment of its lots,
/// waits for one chunk, not for the whole import.
#[tokio::test]
async fn a_large_snapshot_import_commits_as_it_goes() {
    use crate::recovery::{Held, WAIT, heal};
    let mut h = start().await;
    lots_of_t(&mut h).await;
    // The import stops at the last lot it applies until the test lets go.
    at_last_lot(&h.db, WAIT).await;
    let mut held = Held::new(&h.db).await;
    let call = importing(&h.client, "big");
    held.awaited(&h.db).await;
    let meanwhile = available(&mut h.client, "acme", "T").await.on_hand;
    assert!(
        meanwhile > 0 && meanwhile < LOTS as i64,
        "{meanwhile} on hand while the import goes on"
    );
    held.release().await;
    let resp = call.await.unwrap().unwrap().into_inner();
    heal(&h.db).await;
    assert_eq!(resp.rows_applied, LOTS as i64);
    let bad: Vec<_> = resp
        .errors
        .iter()
        .map(|e| (e.row_index, e.field.as_str()))
        .collect();
    assert_eq!(bad, [(0, "sku")]);
    assert_eq!(
        available(&mut h.client, "acme", "T").await.on_hand,
        LOTS as i64
    );
}

/// An import cut short (a lost connection, a crash) keeps the chunks it
/// committed; sent again, it goes on from where it stopped and answers as
/// if it had run at once.
#[tokio::test]
async fn an_import_cut_short_goes_on_when_sent_again() {
    use crate::recovery::heal;
    let mut h = start().await;
    lots_of_t(&mut h).await;
    at_last_lot(&h.db, "RAISE EXCEPTION 'injected failure';").await;
    let msgs = snapshot_msgs("cut", many_lots());
    let client = h.client.clone();
    let import = |msgs: Vec<ImportStockSnapshotRequest>| {
        let mut c = client.clone();
        async move {
            c.import_stock_snapshot(authed("acme", tokio_stream::iter(msgs)))
                .await
        }
    };
    import(msgs.clone()).await.unwrap_err();
    let kept = available(&mut h.client, "acme", "T").await.on_hand;
    assert!(
        kept > 0 && kept < LOTS as i64,
        "{kept} on hand after the failure"
    );
    // Under way, its request_id stays its own.
    let mut other = many_lots();
    other[1].on_hand = 2;
    let err = import(snapshot_msgs("cut", other)).await.unwrap_err();
    assert_eq!(reason(&err), "REQUEST_ID_REUSED", "{err:?}");
    heal(&h.db).await;
    let resp = import(msgs.clone()).await.unwrap().into_inner();
    assert_eq!(resp.rows_applied, LOTS as i64);
    assert_eq!(resp.errors.len(), 1);
    assert_eq!(
        available(&mut h.client, "acme", "T").await.on_hand,
        LOTS as i64
    );
    // One count per lot: the rows committed before were not applied again.
    let counted = counts_of_t(&mut h.client).await;
    assert_eq!(counted.len(), LOTS);
    // All at one moment, the snapshot having none: when the import began,
    // kept across the cut (before 2026-12-04 each count took its own).
    let moments: std::collections::BTreeSet<_> = (counted.iter())
        .map(|m| m.occur_time.map(|t| (t.seconds, t.nanos)))
        .collect();
    assert_eq!(moments.len(), 1, "{moments:?}");
    let again = import(msgs).await.unwrap().into_inner();
    assert_eq!(again, resp);
    // Two copies at once take turns: one answer, one count per lot.
    let twice = snapshot_msgs("twice", many_lots());
    let (a, b) = tokio::join!(import(twice.clone()), import(twice));
    let (a, b) = (a.unwrap().into_inner(), b.unwrap().into_inner());
    assert_eq!((a.rows_applied, &a), (LOTS as i64, &b));
    assert_eq!(counts_of_t(&mut h.client).await.len(), 2 * LOTS);
}

/// An import nobody sends again is forgotten with the rows it refused, once
/// the idempotency retention (30 days by default) has passed.
#[tokio::test]
async fn an_abandoned_import_is_forgotten_after_the_retention() {
    use crate::recovery::heal;
    let mut h = start().await;
    lots_of_t(&mut h).await;
    at_last_lot(&h.db, "RAISE EXCEPTION 'injected failure';").await;
    importing(&h.client, "left").await.unwrap().unwrap_err();
    heal(&h.db).await;
    let mut conn = h.db.connect("inventory").await;
    let kept = "SELECT (SELECT count(*) FROM snapshot_imports) * 10
        + (SELECT count(*) FROM snapshot_import_errors)";
    // Its progress, and row 0 refused (an unknown SKU).
    let now: i64 = sqlx::query_scalar(kept).fetch_one(&mut conn).await.unwrap();
    assert_eq!(now, 11);
    sqlx::query("UPDATE snapshot_imports SET update_time = now() - interval '31 days'")
        .execute(&mut conn)
        .await
        .unwrap();
    wait_until(async || {
        sqlx::query_scalar::<_, i64>(kept)
            .fetch_one(&mut conn)
            .await
            .unwrap()
            == 0
    })
    .await;
}

/// The server's deadline (`OMS_REQUEST_TIMEOUT_MS`) cuts a unary call off,
/// not a client stream: a large snapshot takes minutes. Before, an import
/// was cancelled at 30 s whatever its caller's deadline.
#[tokio::test]
async fn the_server_deadline_cuts_unary_calls_not_an_import() {
    use crate::recovery::{Held, WAIT, heal};
    let mut h = start_with(&[("OMS_REQUEST_TIMEOUT_MS", "300".into())]).await;
    lots_of_t(&mut h).await;
    at_last_lot(&h.db, WAIT).await;
    let mut held = Held::new(&h.db).await;
    let import = importing(&h.client, "long");
    held.awaited(&h.db).await;
    // A receipt of the lot the import holds waits too, until the deadline.
    let err = movement(
        &mut h.client,
        &rid(),
        MovementKind::Receipt,
        "DC1",
        "T",
        |m| {
            m.quantity = 1;
            m.lot = LAST_LOT.into();
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::Cancelled, "{err:?}");
    // The import has waited beyond the deadline as long.
    held.release().await;
    let resp = import.await.unwrap().unwrap().into_inner();
    heal(&h.db).await;
    assert_eq!(resp.rows_applied, LOTS as i64);
}

/// Movements of SKU `T`.
/// Every movement of SKU T.
async fn counts_of_t(c: &mut Client) -> Vec<StockMovement> {
    let (mut all, mut page_token) = (vec![], String::new());
    loop {
        let req = ListMovementsRequest {
            sku: "T".into(),
            page_size: 1000,
            page_token,
            ..Default::default()
        };
        let page = c.list_movements(authed("acme", req)).await.unwrap();
        let page = page.into_inner();
        all.extend(page.movements);
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
}

#[tokio::test]
async fn safety_stock_and_channel_rules_hold_stock_back() {
    let mut h = start().await;
    node(&mut h.client, "acme", "DC1").await;
    node(&mut h.client, "acme", "STORE1").await;
    item(&mut h.client, "acme", "S").await;
    receive(&mut h.client, "acme", "DC1", "S", 10).await;
    receive(&mut h.client, "acme", "STORE1", "S", 4).await;
    h.client
        .set_safety_stock(authed(
            "acme",
            SetSafetyStockRequest {
                request_id: rid(),
                node_id: "STORE1".into(),
                sku: String::new(),
                quantity: 3,
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let a = available(&mut h.client, "acme", "S").await;
    assert_eq!((a.on_hand, a.held_back, a.available), (14, 3, 11));
    // A SKU's own figure wins over the node's default; removed, the
    // default applies again.
    let safety = |quantity: i64, remove: bool| SetSafetyStockRequest {
        request_id: rid(),
        node_id: "STORE1".into(),
        sku: "S".into(),
        quantity,
        remove,
    };
    let set = h
        .client
        .set_safety_stock(authed("acme", safety(1, false)))
        .await
        .unwrap()
        .into_inner();
    let stored = SafetyStock {
        node_id: "STORE1".into(),
        sku: "S".into(),
        quantity: 1,
    };
    assert_eq!(set.safety_stock, Some(stored));
    assert_eq!(set.changed_skus, ["S"]);
    assert_eq!(available(&mut h.client, "acme", "S").await.available, 13);
    let err = h
        .client
        .set_safety_stock(authed("acme", safety(1, true)))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["quantity"]);
    // Beyond any stock: bad input (the gate answered "unavailable").
    let err = h
        .client
        .set_safety_stock(authed("acme", safety(i64::MAX, false)))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), fields(&err)),
        (tonic::Code::InvalidArgument, vec!["quantity".to_string()])
    );
    let removed = h
        .client
        .set_safety_stock(authed("acme", safety(0, true)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(removed.safety_stock, None);
    assert_eq!(removed.changed_skus, ["S"]);
    let a = available(&mut h.client, "acme", "S").await;
    assert_eq!((a.held_back, a.available), (3, 11));

    h.client
        .set_channel_rule(authed(
            "acme",
            SetChannelRuleRequest {
                request_id: rid(),
                rule: Some(ChannelRule {
                    channel: "channels/marketplace".into(),
                    node_ids: vec!["DC1".into()],
                    buffer: Some(channel_rule::Buffer::BufferPercent(20)),
                }),
                remove: false,
            },
        ))
        .await
        .unwrap();
    let ch = h
        .client
        .get_availability(authed(
            "acme",
            GetAvailabilityRequest {
                skus: vec!["S".into()],
                scope: AvailabilityScope::Channel as i32,
                channel: "channels/marketplace".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .availabilities;
    assert_eq!(ch[0].available, 8, "DC1's 10 minus 20%");

    // The channel rule gates reservations too.
    let mut req = CreateReservationRequest {
        reservation_id: "ch-1".into(),
        lines: vec![line("S", "", 9)],
        channel: "channels/marketplace".into(),
        ..Default::default()
    };
    let err = h
        .client
        .create_reservation(authed("acme", req.clone()))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "INSUFFICIENT_STOCK");
    req.lines[0].quantity = 8;
    h.client
        .create_reservation(authed("acme", req))
        .await
        .unwrap();

    let nodes = h
        .client
        .get_availability(authed(
            "acme",
            GetAvailabilityRequest {
                skus: vec!["S".into()],
                scope: AvailabilityScope::Node as i32,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .availabilities;
    let per: Vec<(String, i64)> = nodes
        .iter()
        .map(|a| (a.node_id.clone(), a.available))
        .collect();
    assert_eq!(
        per,
        [("DC1".to_string(), 10), ("STORE1".to_string(), 1)],
        "a network hold is not at any node yet"
    );
    assert_eq!(available(&mut h.client, "acme", "S").await.available, 3);

    // Without a scope, the request's channel or nodes name it; given
    // under another scope they are refused, not ignored, and so are
    // nodes the tenant has not got.
    let mut ask = async |scope: AvailabilityScope, node_ids: &[&str], channel: &str| {
        let req = GetAvailabilityRequest {
            skus: vec!["S".into()],
            scope: scope as i32,
            node_ids: node_ids.iter().map(|n| n.to_string()).collect(),
            channel: channel.into(),
            ..Default::default()
        };
        h.client.get_availability(authed("acme", req)).await
    };
    let unset = AvailabilityScope::Unspecified;
    let by_channel = ask(unset, &[], "channels/marketplace").await.unwrap();
    let explicit = ask(AvailabilityScope::Channel, &[], "channels/marketplace")
        .await
        .unwrap();
    assert_eq!(
        by_channel.get_ref().availabilities,
        explicit.get_ref().availabilities
    );
    assert_eq!(
        by_channel.get_ref().availabilities[0].channel,
        "channels/marketplace"
    );
    let at_store = ask(unset, &["STORE1"], "").await.unwrap();
    let a = &at_store.get_ref().availabilities;
    assert_eq!(
        (a.len(), a[0].node_id.as_str(), a[0].available),
        (1, "STORE1", 1)
    );
    let err = ask(AvailabilityScope::Network, &["DC1"], "channels/marketplace")
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["channel", "node_ids"]);
    let err = ask(unset, &["DC1", "DC9"], "").await.unwrap_err();
    assert_eq!(
        (err.code(), fields(&err)),
        (
            tonic::Code::InvalidArgument,
            vec!["node_ids[1]".to_string()]
        )
    );
}

#[tokio::test]
async fn availability_comes_in_pages_of_figures() {
    let mut h = start().await;
    let c = &mut h.client;
    for n in ["A", "B", "C"] {
        node(c, "acme", n).await;
    }
    for (i, sku) in ["S1", "S2", "S3", "S4"].into_iter().enumerate() {
        item(c, "acme", sku).await;
        for (j, n) in ["A", "B", "C"].into_iter().enumerate() {
            receive(c, "acme", n, sku, (10 * i + j + 1) as i64).await;
        }
    }
    let skus: Vec<String> = ["S4", "S2", "S1", "S3"].map(String::from).into();
    // Every page of a request, with the figures' (SKU, node, available).
    let mut pages = async |scope: AvailabilityScope, page_size: i32| {
        let (mut pages, mut page_token) = (vec![], String::new());
        loop {
            let req = GetAvailabilityRequest {
                skus: skus.clone(),
                scope: scope as i32,
                page_size,
                page_token,
                ..Default::default()
            };
            let page = c.get_availability(authed("acme", req)).await.unwrap();
            let page = page.into_inner();
            let figures: Vec<(String, String, i64)> = (page.availabilities.iter())
                .map(|a| (a.sku.clone(), a.node_id.clone(), a.available))
                .collect();
            pages.push(figures);
            if page.next_page_token.is_empty() {
                return pages;
            }
            page_token = page.next_page_token;
        }
    };
    let all = pages(AvailabilityScope::Node, 0).await;
    assert_eq!(all.len(), 1, "12 figures fit the default page");
    let expected: Vec<(String, String, i64)> = (1..=4)
        .flat_map(|i| {
            (["A", "B", "C"].into_iter().enumerate())
                .map(move |(j, n)| (format!("S{i}"), n.to_string(), 10 * (i - 1) + j as i64 + 1))
        })
        .collect();
    assert_eq!(all[0], expected, "by SKU, then node");
    // Pages of 5 split S2's nodes; together they are the one answer.
    let paged = pages(AvailabilityScope::Node, 5).await;
    assert_eq!(paged.iter().map(Vec::len).collect::<Vec<_>>(), [5, 5, 2]);
    assert_eq!(paged.concat(), expected);
    let network = pages(AvailabilityScope::Network, 3).await;
    assert_eq!(network.iter().map(Vec::len).collect::<Vec<_>>(), [3, 1]);
    let totals: Vec<i64> = network.concat().iter().map(|f| f.2).collect();
    assert_eq!(totals, [6, 36, 66, 96]);

    // A token is for the request it came from, and sizes are not negative.
    let first = GetAvailabilityRequest {
        skus: skus.clone(),
        scope: AvailabilityScope::Node as i32,
        page_size: 5,
        ..Default::default()
    };
    let token = (c.get_availability(authed("acme", first.clone())).await)
        .unwrap()
        .into_inner()
        .next_page_token;
    let other = GetAvailabilityRequest {
        skus: vec!["S1".into()],
        page_token: token,
        ..first.clone()
    };
    let err = c.get_availability(authed("acme", other)).await.unwrap_err();
    assert_eq!(
        (err.code(), fields(&err)),
        (Code::InvalidArgument, vec!["page_token".to_string()])
    );
    let negative = GetAvailabilityRequest {
        page_size: -1,
        ..first
    };
    let err = c
        .get_availability(authed("acme", negative))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["page_size"]);
}

/// A channel's figure and its feed cursor.
async fn for_channel(c: &mut Client, channel: &str) -> (Availability, String) {
    let req = GetAvailabilityRequest {
        skus: vec!["S".into()],
        channel: channel.into(),
        ..Default::default()
    };
    let mut got = c
        .get_availability(authed("acme", req))
        .await
        .unwrap()
        .into_inner();
    (got.availabilities.remove(0), got.feed_cursor)
}

#[tokio::test]
async fn a_channel_buffer_holds_the_last_units_back_and_a_rule_can_be_removed() {
    let mut h = start().await;
    node(&mut h.client, "acme", "DC1").await;
    node(&mut h.client, "acme", "STORE1").await;
    item(&mut h.client, "acme", "S").await;
    receive(&mut h.client, "acme", "DC1", "S", 10).await;
    receive(&mut h.client, "acme", "STORE1", "S", 5).await;
    let c = &mut h.client;
    let set = |request_id: &str, node_ids: &[&str], remove: bool| SetChannelRuleRequest {
        request_id: request_id.into(),
        rule: Some(ChannelRule {
            channel: "channels/marketplace".into(),
            node_ids: node_ids.iter().map(|n| n.to_string()).collect(),
            buffer: (!remove).then_some(channel_rule::Buffer::BufferPercent(20)),
        }),
        remove,
    };
    let err = c
        .set_channel_rule(authed("acme", set("rule-0", &["DC1", "DC1"], false)))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["rule.node_ids[1]"], "{err:?}");
    let mut beyond = set("rule-0b", &["DC1"], false);
    beyond.rule.as_mut().unwrap().buffer = Some(channel_rule::Buffer::BufferQuantity(i64::MAX));
    let err = c
        .set_channel_rule(authed("acme", beyond))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["rule.buffer_quantity"], "{err:?}");
    c.set_channel_rule(authed("acme", set("rule-1", &["DC1"], false)))
        .await
        .unwrap();
    let via = |id: &str, q: i64| CreateReservationRequest {
        reservation_id: id.into(),
        lines: vec![line("S", "", q)],
        channel: "channels/marketplace".into(),
        ..Default::default()
    };
    c.create_reservation(authed("acme", via("ch-1", 8)))
        .await
        .unwrap();
    // DC1 can promise 2 more: 20 % of 2 is 0.4, and the buffer holds a
    // whole unit of them back, in the figures and at the gate alike.
    let (a, cursor) = for_channel(c, "channels/marketplace").await;
    assert_eq!((a.held_back, a.available), (1, 1));
    let err = c
        .create_reservation(authed("acme", via("ch-2", 2)))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "INSUFFICIENT_STOCK");
    c.create_reservation(authed("acme", via("ch-2", 1)))
        .await
        .unwrap();

    let mut feed = c
        .watch_availability(authed(
            "acme",
            WatchAvailabilityRequest {
                after_cursor: cursor,
                skus: vec!["S".into()],
                channel: "channels/marketplace".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let err = c
        .set_channel_rule(authed("acme", set("rule-2", &["DC1"], true)))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["rule"]);
    let removed = c
        .set_channel_rule(authed("acme", set("rule-3", &[], true)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(removed.rule, None);
    let again = c
        .set_channel_rule(authed("acme", set("rule-3", &[], true)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, removed, "a replay answers as the first time");
    let err = c
        .set_channel_rule(authed("acme", set("rule-4", &[], true)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let rules = c
        .list_channel_rules(authed("acme", ListChannelRulesRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .rules;
    assert!(rules.is_empty(), "{rules:?}");

    // Without its rule the channel sells from every node, nothing held
    // back: DC1's 1 left and STORE1's 5; its feed says so.
    let (a, _) = for_channel(c, "channels/marketplace").await;
    assert_eq!((a.held_back, a.available), (0, 6));
    loop {
        let a = feed.message().await.unwrap().unwrap().availability.unwrap();
        assert_eq!(a.channel, "channels/marketplace");
        if a.available == 6 {
            break;
        }
        assert_eq!(a.available, 0, "the figure after ch-2: {a:?}");
    }
}

/// Reads `feed` until a figure of `available` units; fails after 30 s.
async fn until_available(feed: &mut tonic::Streaming<WatchAvailabilityResponse>, available: i64) {
    let wait = async {
        loop {
            let a = feed.message().await.unwrap().unwrap().availability.unwrap();
            if a.available == available {
                return;
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), wait)
        .await
        .unwrap_or_else(|_| panic!("no figure of {available} within 30 s"));
}

/// A node disabled, enabled or no longer shared changes what its tenants
/// may promise: each tenant with stock there sees it on its availability
/// feed, which channel connectors publish from.
#[tokio::test]
async fn a_node_disabled_or_unshared_is_a_change_on_every_feed_of_a_tenant_there() {
    let mut h = start().await;
    let c = &mut h.client;
    node_with(c, "threepl", "3PL-1", |n| {
        n.shared_with_tenants = vec!["acme".into()];
    })
    .await;
    let mut feeds = Vec::new();
    for (tenant, units) in [("acme", 7), ("threepl", 2)] {
        item(c, tenant, "S").await;
        receive(c, tenant, "3PL-1", "S", units).await;
        let now = availability(c, tenant, "S").await;
        assert_eq!(now.availabilities[0].available, units);
        let watch = WatchAvailabilityRequest {
            after_cursor: now.feed_cursor,
            skus: vec!["S".into()],
            ..Default::default()
        };
        let feed = c.watch_availability(authed(tenant, watch)).await.unwrap();
        feeds.push(feed.into_inner());
    }
    let update = |enabled: bool, shared: &[&str]| UpdateNodeRequest {
        request_id: rid(),
        node: Some(Node {
            name: "nodes/3PL-1".into(),
            enabled,
            shared_with_tenants: shared.iter().map(|t| t.to_string()).collect(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["enabled".into(), "shared_with_tenants".into()],
        }),
    };
    c.update_node(authed("threepl", update(false, &["acme"])))
        .await
        .unwrap();
    until_available(&mut feeds[0], 0).await;
    until_available(&mut feeds[1], 0).await;
    c.update_node(authed("threepl", update(true, &["acme"])))
        .await
        .unwrap();
    until_available(&mut feeds[0], 7).await;
    until_available(&mut feeds[1], 2).await;
    // No longer shared with acme: acme's 7 units there are not promised.
    c.update_node(authed("threepl", update(true, &[])))
        .await
        .unwrap();
    until_available(&mut feeds[0], 0).await;
    assert_eq!(available(c, "acme", "S").await.available, 0);
    assert_eq!(available(c, "threepl", "S").await.available, 2);
}

/// A node-scope feed sends the figures at the nodes a change touched,
/// each with its node: what store-level connectors (pickup, local
/// listings) publish.
#[tokio::test]
async fn a_node_feed_sends_the_figures_at_the_nodes_a_change_touched() {
    let mut h = start().await;
    let c = &mut h.client;
    for n in ["DC1", "STORE1", "STORE2"] {
        node(c, "acme", n).await;
    }
    item(c, "acme", "S").await;
    item(c, "acme", "T").await;
    receive(c, "acme", "DC1", "S", 10).await;
    receive(c, "acme", "STORE1", "S", 5).await;
    receive(c, "acme", "STORE2", "T", 3).await;
    let cursor = availability(c, "acme", "S").await.feed_cursor;
    let watch = |node_ids: &[&str]| WatchAvailabilityRequest {
        after_cursor: cursor.clone(),
        scope: AvailabilityScope::Node as i32,
        node_ids: node_ids.iter().map(|n| n.to_string()).collect(),
        ..Default::default()
    };
    let mut every = (c.watch_availability(authed("acme", watch(&[]))).await)
        .unwrap()
        .into_inner();
    let mut dc1 = (c.watch_availability(authed("acme", watch(&["DC1"]))).await)
        .unwrap()
        .into_inner();
    let mut store2 = (c
        .watch_availability(authed("acme", watch(&["STORE2"])))
        .await)
        .unwrap()
        .into_inner();
    // The next figure of a feed: (SKU, node, available, in transit). A
    // feed from a cursor may repeat changes the figures read with it
    // showed already (the stock received above): those are skipped.
    let before = [("S", "DC1", 10), ("S", "STORE1", 5), ("T", "STORE2", 3)];
    let next = async |feed: &mut tonic::Streaming<WatchAvailabilityResponse>| loop {
        let a = feed.message().await.unwrap().unwrap().availability.unwrap();
        let shown = (a.sku.as_str(), a.node_id.as_str(), a.available);
        if a.in_transit != 0 || !before.contains(&shown) {
            return (a.sku, a.node_id, a.available, a.in_transit);
        }
    };
    let fig = |sku: &str, node: &str, available: i64, in_transit: i64| {
        (sku.to_string(), node.to_string(), available, in_transit)
    };

    receive(c, "acme", "STORE1", "S", 2).await;
    assert_eq!(
        next(&mut every).await,
        fig("S", "STORE1", 7, 0),
        "the store only"
    );
    // A hold not at a node changes no node's figure; one at a node does.
    let hold = |id: &str, node: &str, q: i64| CreateReservationRequest {
        reservation_id: id.into(),
        lines: vec![line("S", node, q)],
        ..Default::default()
    };
    c.create_reservation(authed("acme", hold("net", "", 3)))
        .await
        .unwrap();
    c.create_reservation(authed("acme", hold("at-store", "STORE1", 1)))
        .await
        .unwrap();
    assert_eq!(next(&mut every).await, fig("S", "STORE1", 6, 0));
    // Confirmed at DC1: the hold reaches DC1.
    let confirm = ConfirmReservationRequest {
        request_id: rid(),
        name: "reservations/net".into(),
        allocations: vec![Allocation {
            sku: "S".into(),
            node_id: "DC1".into(),
            quantity: 3,
            ..Default::default()
        }],
    };
    c.confirm_reservation(authed("acme", confirm))
        .await
        .unwrap();
    assert_eq!(next(&mut every).await, fig("S", "DC1", 7, 0));
    // A transfer's shipment: less at DC1, more on its way to the store.
    let send = SendTransferRequest {
        request_id: rid(),
        transfer_id: "TO-1".into(),
        from_node_id: "DC1".into(),
        to_node_id: "STORE1".into(),
        lines: vec![TransferLine {
            sku: "S".into(),
            quantity: 2,
            ..Default::default()
        }],
        ..Default::default()
    };
    c.send_transfer(authed("acme", send)).await.unwrap();
    assert_eq!(next(&mut every).await, fig("S", "DC1", 5, 0));
    assert_eq!(next(&mut every).await, fig("S", "STORE1", 6, 2));
    // A node disabled promises nothing: an empty figure says so.
    let disable = enabling("STORE2", false);
    c.update_node(authed("acme", disable)).await.unwrap();
    assert_eq!(next(&mut every).await, fig("T", "STORE2", 0, 0));
    // GetAvailability gives the same empty figure for it, and one for a
    // named node with none of the SKU: a node asked for is never left out.
    let named = GetAvailabilityRequest {
        skus: vec!["T".into()],
        node_ids: vec!["STORE2".into(), "STORE1".into()],
        ..Default::default()
    };
    let got = (c.get_availability(authed("acme", named)).await).unwrap();
    let got: Vec<(String, String, i64, i64)> = (got.into_inner().availabilities.into_iter())
        .map(|a| (a.sku, a.node_id, a.on_hand, a.available))
        .collect();
    let empty = |node: &str| ("T".to_string(), node.to_string(), 0, 0);
    assert_eq!(
        got,
        [empty("STORE1"), empty("STORE2")],
        "by node, the disabled store's 3 units promised nowhere"
    );

    // The DC1 feed saw only DC1's changes.
    assert_eq!(next(&mut dc1).await, fig("S", "DC1", 7, 0));
    assert_eq!(next(&mut dc1).await, fig("S", "DC1", 5, 0));
    // STORE2, which has no S, was sent nothing of the transfer of S
    // between the others: its first figure is its own change.
    assert_eq!(next(&mut store2).await, fig("T", "STORE2", 0, 0));
    // Nodes the caller has not got are refused, as by GetAvailability.
    let err = c
        .watch_availability(authed("acme", watch(&["DC9"])))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), fields(&err)),
        (Code::InvalidArgument, vec!["node_ids[0]".to_string()])
    );
}

/// A connector that wants stock movements is not sent every reservation
/// of a sale: the event feed takes the types wanted.
#[tokio::test]
async fn the_event_feed_sends_only_the_types_asked_for() {
    use inventory_event::Kind;
    let mut h = start().await;
    let c = &mut h.client;
    node(c, "acme", "DC1").await;
    item(c, "acme", "S").await;
    receive(c, "acme", "DC1", "S", 5).await;
    reserve(c, "acme", "r1", vec![line("S", "", 1)])
        .await
        .unwrap();
    receive(c, "acme", "DC1", "S", 2).await;
    let release = ReleaseReservationRequest {
        request_id: rid(),
        name: "reservations/r1".into(),
        ..Default::default()
    };
    c.release_reservation(authed("acme", release))
        .await
        .unwrap();
    let watch = |after: &str, types: &[&str]| WatchInventoryEventsRequest {
        after_cursor: after.into(),
        event_types: types.iter().map(|t| t.to_string()).collect(),
    };
    let mut feed = (c.watch_inventory_events(authed(
        "acme",
        watch("", &["StockMoved", "ReservationReleased"]),
    )))
    .await
    .unwrap()
    .into_inner();
    let mut got = vec![];
    for _ in 0..3 {
        got.push(feed.message().await.unwrap().unwrap().event.unwrap());
    }
    let kinds: Vec<&str> = (got.iter())
        .map(|e| match e.kind.as_ref().unwrap() {
            Kind::StockMoved(_) => "moved",
            Kind::ReservationReleased(_) => "released",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["moved", "moved", "released"]);
    // Resumed after the first, the types asked for follow it.
    let first = got[0].meta.as_ref().unwrap().cursor.clone();
    let mut again = (c.watch_inventory_events(authed("acme", watch(&first, &["StockMoved"]))))
        .await
        .unwrap()
        .into_inner();
    let next = again.message().await.unwrap().unwrap().event.unwrap();
    assert_eq!(next.meta, got[1].meta);

    let err = c
        .watch_inventory_events(authed("acme", watch("", &["StockMoved", "Moved"])))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), fields(&err)),
        (Code::InvalidArgument, vec!["event_types[1]".to_string()])
    );
}

#[tokio::test]
async fn the_availability_feed_follows_changes() {
    let mut h = start().await;
    node(&mut h.client, "acme", "DC1").await;
    item(&mut h.client, "acme", "S").await;
    item(&mut h.client, "acme", "OTHER").await;
    let mut feed = h
        .client
        .watch_availability(authed(
            "acme",
            WatchAvailabilityRequest {
                skus: vec!["S".into()],
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    receive(&mut h.client, "acme", "DC1", "OTHER", 1).await;
    receive(&mut h.client, "acme", "DC1", "S", 6).await;
    let first = feed.message().await.unwrap().unwrap();
    assert_eq!(
        first.availability.as_ref().unwrap().sku,
        "S",
        "only the SKUs asked for"
    );
    assert_eq!(first.availability.unwrap().available, 6);
    reserve(&mut h.client, "acme", "r1", vec![line("S", "", 2)])
        .await
        .unwrap();
    let second = feed.message().await.unwrap().unwrap();
    assert_eq!(second.availability.unwrap().available, 4);
    assert!(!second.meta.unwrap().cursor.is_empty());
    // Stock held back is a change too.
    h.client
        .set_safety_stock(authed(
            "acme",
            SetSafetyStockRequest {
                request_id: "safety-1".into(),
                node_id: "DC1".into(),
                sku: "S".into(),
                quantity: 1,
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let third = feed.message().await.unwrap().unwrap();
    assert_eq!(third.availability.unwrap().available, 3);

    // Figures read now, then the feed from where they were read: the next
    // change arrives (the feed may first repeat what the figures show).
    let now = availability(&mut h.client, "acme", "S").await;
    assert_eq!(now.availabilities[0].available, 3);
    let mut resumed = h
        .client
        .watch_availability(authed(
            "acme",
            WatchAvailabilityRequest {
                after_cursor: now.feed_cursor.clone(),
                skus: vec!["S".into()],
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    receive(&mut h.client, "acme", "DC1", "S", 2).await;
    loop {
        let a = resumed
            .message()
            .await
            .unwrap()
            .unwrap()
            .availability
            .unwrap();
        assert!([3, 5].contains(&a.available), "{a:?}");
        if a.available == 5 {
            break;
        }
    }

    // One change of two SKUs (a channel rule): resuming after its first
    // figure repeats the change instead of missing its second figure.
    let watch_web = |after: &str| {
        authed(
            "acme",
            WatchAvailabilityRequest {
                after_cursor: after.into(),
                channel: "channels/web".into(),
                ..Default::default()
            },
        )
    };
    let mut web = h
        .client
        .watch_availability(watch_web(&now.feed_cursor))
        .await
        .unwrap()
        .into_inner();
    h.client
        .set_channel_rule(authed(
            "acme",
            SetChannelRuleRequest {
                request_id: "rule-web".into(),
                rule: Some(ChannelRule {
                    channel: "channels/web".into(),
                    node_ids: vec!["DC1".into()],
                    buffer: Some(channel_rule::Buffer::BufferQuantity(1)),
                }),
                remove: false,
            },
        ))
        .await
        .unwrap();
    let mut group = vec![];
    while group.len() < 2 {
        let m = web.message().await.unwrap().unwrap();
        if m.meta.as_ref().unwrap().request_id == "rule-web" {
            group.push(m);
        }
    }
    let cursor_of = |m: &WatchAvailabilityResponse| m.meta.as_ref().unwrap().cursor.clone();
    assert_ne!(cursor_of(&group[0]), cursor_of(&group[1]));
    let mut again = h
        .client
        .watch_availability(watch_web(&cursor_of(&group[0])))
        .await
        .unwrap()
        .into_inner();
    for m in &group {
        assert_eq!(&again.message().await.unwrap().unwrap(), m);
    }
}

/// Waits until a feed can read every change committed so far: it reads
/// only below the oldest transaction still open in the whole Postgres
/// cluster (another test's, too).
async fn feed_settled(conn: &mut sqlx::PgConnection) {
    wait_until(async || {
        sqlx::query_scalar::<_, bool>(
            "SELECT pg_snapshot_xmin(pg_current_snapshot()) > max(txid) FROM outbox",
        )
        .fetch_one(&mut *conn)
        .await
        .unwrap()
    })
    .await;
}

/// Nodes N00 to N11 and SKUs P000 to P099 of acme: the SKUs.
async fn grid(c: &mut Client) -> Vec<String> {
    for n in 0..12 {
        node(c, "acme", &format!("N{n:02}")).await;
    }
    let skus: Vec<String> = (0..100).map(|k| format!("P{k:03}")).collect();
    for s in &skus {
        item(c, "acme", s).await;
    }
    skus
}

/// A count of `on_hand` of each of [`grid`]'s SKUs at each of its nodes,
/// by node: 1,200 rows.
fn grid_count(skus: &[String], on_hand: i64) -> Vec<SnapshotRow> {
    (0..12)
        .flat_map(|n| {
            skus.iter().map(move |s| SnapshotRow {
                node_id: format!("N{n:02}"),
                sku: s.clone(),
                on_hand,
                ..Default::default()
            })
        })
        .collect()
}

/// A watcher behind an import reads its changes 5,000 at a time and sends
/// each SKU's figure once for them. Before, it read them 500 at a time: a
/// figure per SKU per 500 changes (an import of 40,000 rows over 200 SKUs
/// sent each 80 times, and the watcher caught up 14 s after the import).
#[tokio::test]
async fn a_watcher_behind_an_import_sends_each_figure_once() {
    let mut h = start().await;
    let c = &mut h.client;
    let skus = grid(c).await;
    let before = availability(c, "acme", &skus[0]).await.feed_cursor;
    let resp = import_snapshot(c, grid_count(&skus, 3)).await;
    assert_eq!(resp.rows_applied, 1200, "{:?}", resp.errors);
    feed_settled(&mut h.db.connect("inventory").await).await;
    let req = WatchAvailabilityRequest {
        after_cursor: before,
        ..Default::default()
    };
    let mut feed = c
        .watch_availability(authed("acme", req))
        .await
        .unwrap()
        .into_inner();
    let mut figures = vec![];
    for _ in &skus {
        let a = feed.message().await.unwrap().unwrap().availability.unwrap();
        figures.push((a.sku, a.available));
    }
    figures.sort();
    let want: Vec<_> = skus.iter().map(|s| (s.clone(), 36)).collect();
    assert_eq!(figures, want);
    // The next figure is the next change's: none in between.
    receive(c, "acme", "N00", "P007", 1).await;
    let next = feed.message().await.unwrap().unwrap().availability.unwrap();
    assert_eq!((next.sku.as_str(), next.available), ("P007", 37));
}

#[tokio::test]
async fn a_watcher_behind_a_burst_reads_one_figure_for_it() {
    let mut h = start().await;
    node(&mut h.client, "acme", "DC1").await;
    item(&mut h.client, "acme", "S").await;
    receive(&mut h.client, "acme", "DC1", "S", 500).await;
    let before = availability(&mut h.client, "acme", "S").await.feed_cursor;
    // A burst of 100 reservations of S, then a watcher from before it.
    let codes = burst(&mut h.client, "r", 100, "S").await;
    assert!(codes.iter().all(|c| *c == 0), "{codes:?}");
    let mut conn = h.db.connect("inventory").await;
    feed_settled(&mut conn).await;
    let mut feed = h
        .client
        .watch_availability(authed(
            "acme",
            WatchAvailabilityRequest {
                after_cursor: before,
                skus: vec!["S".into()],
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    // One figure, the one after the burst, at the burst's last change...
    let first = feed.message().await.unwrap().unwrap();
    assert_eq!(first.availability.unwrap().available, 400);
    let (txid, id): (String, i64) = sqlx::query_as(
        "SELECT txid::text, id FROM outbox WHERE event_type = 'StockReserved' ORDER BY txid DESC, id DESC LIMIT 1",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(first.meta.unwrap().cursor, format!("{txid}.{id}"));
    // ...and the next figure is the next change's: none in between.
    receive(&mut h.client, "acme", "DC1", "S", 1).await;
    let next = feed.message().await.unwrap().unwrap();
    assert_eq!(next.availability.unwrap().available, 401);
}

#[tokio::test]
async fn safety_stock_is_listed_by_node_and_sku_with_the_defaults_that_apply() {
    let mut h = start().await;
    for n in ["DC1", "DC2"] {
        node(&mut h.client, "acme", n).await;
    }
    for s in ["A", "B"] {
        item(&mut h.client, "acme", s).await;
    }
    node(&mut h.client, "other", "DC9").await;
    let set = |tenant: &'static str, node: &str, sku: &str, quantity: i64| {
        let mut c = h.client.clone();
        let req = SetSafetyStockRequest {
            request_id: rid(),
            node_id: node.into(),
            sku: sku.into(),
            quantity,
            ..Default::default()
        };
        async move { c.set_safety_stock(authed(tenant, req)).await.unwrap() }
    };
    set("acme", "DC2", "B", 4).await;
    set("acme", "DC1", "", 2).await;
    set("acme", "DC1", "A", 5).await;
    set("acme", "DC2", "A", 1).await;
    set("acme", "DC1", "A", 6).await; // replaces 5
    set("other", "DC9", "", 9).await;
    let list = |req: ListSafetyStockRequest| {
        let mut c = h.client.clone();
        async move {
            c.list_safety_stock(authed("acme", req))
                .await
                .map(|r| r.into_inner())
        }
    };
    let rows = |r: &ListSafetyStockResponse| -> Vec<(String, String, i64)> {
        r.safety_stock
            .iter()
            .map(|s| (s.node_id.clone(), s.sku.clone(), s.quantity))
            .collect()
    };
    let row = |n: &str, s: &str, q: i64| (n.to_string(), s.to_string(), q);

    let all = list(ListSafetyStockRequest::default()).await.unwrap();
    assert_eq!(
        rows(&all),
        [
            row("DC1", "", 2),
            row("DC1", "A", 6),
            row("DC2", "A", 1),
            row("DC2", "B", 4)
        ],
        "the tenant's own, by node then SKU, the default first"
    );
    assert!(all.next_page_token.is_empty());

    let b = list(ListSafetyStockRequest {
        skus: vec!["B".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        rows(&b),
        [row("DC1", "", 2), row("DC2", "B", 4)],
        "B's own and the defaults that apply to it"
    );
    let dc2 = list(ListSafetyStockRequest {
        node_id: "DC2".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(rows(&dc2), [row("DC2", "A", 1), row("DC2", "B", 4)]);

    // Pages of 3 then 1; a token is bound to its filters.
    let first = list(ListSafetyStockRequest {
        page_size: 3,
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(rows(&first), rows(&all)[..3]);
    let second = list(ListSafetyStockRequest {
        page_size: 3,
        page_token: first.next_page_token.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(rows(&second), rows(&all)[3..]);
    assert!(second.next_page_token.is_empty());
    let err = list(ListSafetyStockRequest {
        page_token: first.next_page_token.clone(),
        node_id: "DC2".into(),
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert_eq!(fields(&err), ["page_token"]);

    let err = list(ListSafetyStockRequest {
        page_size: -1,
        node_id: "bad node".into(),
        skus: vec![String::new()],
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(fields(&err), ["node_id", "skus[0]", "page_size"]);
}

/// A movement of serial-tracked units at DC nodes, with its serials.
pub async fn serial_move(
    c: &mut Client,
    kind: MovementKind,
    node: &str,
    q: i64,
    serials: &[&str],
) -> Result<StockMovement, tonic::Status> {
    movement(c, &rid(), kind, node, "PH", |m| {
        m.quantity = q;
        if kind == MovementKind::CycleCount {
            m.counted_quantity = Some(q);
        }
        m.serial_numbers = serials.iter().map(|s| s.to_string()).collect();
    })
    .await
}

/// (serial, node; empty once gone) of PH, by serial.
pub async fn serials(c: &mut Client, node: &str, include_gone: bool) -> Vec<(String, String)> {
    c.list_serial_numbers(authed(
        "acme",
        ListSerialNumbersRequest {
            sku: "PH".into(),
            node_id: node.into(),
            include_gone,
            ..Default::default()
        },
    ))
    .await
    .unwrap()
    .into_inner()
    .serial_numbers
    .into_iter()
    .map(|s| (s.serial_number, s.node_id))
    .collect()
}

fn at(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(s, n)| (s.to_string(), n.to_string()))
        .collect()
}

#[tokio::test]
async fn serial_numbers_follow_their_units() {
    use MovementKind::*;
    let mut h = start().await;
    let c = &mut h.client;
    for n in ["DC1", "DC2", "DC3"] {
        node(c, "acme", n).await;
    }
    tracked_item(c, "PH", |i| i.serial_tracked = true).await;
    serial_move(c, Receipt, "DC1", 2, &["A", "B"])
        .await
        .unwrap();

    // A unit cannot arrive twice.
    let err = serial_move(c, Receipt, "DC2", 1, &["A"]).await.unwrap_err();
    assert_eq!(
        (err.code(), reason(&err)),
        (Code::FailedPrecondition, "SERIAL_ON_HAND".to_string())
    );
    assert!(
        err.message().contains("A (on hand at nodes/DC1)"),
        "{err:?}"
    );
    let err = serial_move(c, Receipt, "DC1", 2, &["C", "C"])
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["movement.serial_numbers[1]"]);
    assert_eq!(
        serials(c, "", true).await,
        at(&[("A", "DC1"), ("B", "DC1")])
    );

    c.transfer_stock(authed(
        "acme",
        TransferStockRequest {
            request_id: rid(),
            from_node_id: "DC1".into(),
            to_node_id: "DC2".into(),
            sku: "PH".into(),
            quantity: 1,
            serial_numbers: vec!["A".into()],
            ..Default::default()
        },
    ))
    .await
    .unwrap();
    assert_eq!(
        serials(c, "", false).await,
        at(&[("A", "DC2"), ("B", "DC1")])
    );
    // Nor leave from where it is not.
    let err = serial_move(c, Shipment, "DC1", -1, &["A"])
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "SERIAL_NOT_ON_HAND");
    assert!(
        err.message().contains("A (on hand at nodes/DC2)"),
        "{err:?}"
    );
    let err = serial_move(c, Shipment, "DC1", -1, &["Z"])
        .await
        .unwrap_err();
    assert!(err.message().contains("Z (never received)"), "{err:?}");

    serial_move(c, Shipment, "DC2", -1, &["A"]).await.unwrap();
    assert_eq!(serials(c, "", false).await, at(&[("B", "DC1")]));
    assert_eq!(serials(c, "", true).await, at(&[("A", ""), ("B", "DC1")]));
    // A returned unit is on hand again.
    serial_move(c, ReturnRestock, "DC1", 1, &["A"])
        .await
        .unwrap();
    assert_eq!(
        serials(c, "DC1", false).await,
        at(&[("A", "DC1"), ("B", "DC1")])
    );

    // A count that lists serials makes them what is on hand there.
    let counted = serial_move(c, CycleCount, "DC1", 2, &["B", "D"])
        .await
        .unwrap();
    assert_eq!((counted.quantity, counted.on_hand_after), (0, 2));
    assert_eq!(
        serials(c, "", true).await,
        at(&[("A", ""), ("B", "DC1"), ("D", "DC1")])
    );
    // A snapshot row may list serials too; one on hand elsewhere is a row
    // error, and the other rows apply.
    let row = |node: &str, serials: &[&str]| SnapshotRow {
        node_id: node.into(),
        sku: "PH".into(),
        on_hand: serials.len() as i64,
        serial_numbers: serials.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    let resp = import_snapshot(c, vec![row("DC2", &["E"]), row("DC3", &["B"])]).await;
    assert_eq!(resp.rows_applied, 1);
    assert_eq!(resp.errors[0].field, "serial_numbers", "{resp:?}");
    assert!(
        resp.errors[0]
            .description
            .contains("B (on hand at nodes/DC1)")
    );
    assert_eq!(serials(c, "DC2", false).await, at(&[("E", "DC2")]));
    let err = serial_move(c, CycleCount, "DC1", 2, &["B"])
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["movement.serial_numbers"]);
    // A unit's history, newest first; refused movements are not in it.
    let history = c
        .list_movements(authed(
            "acme",
            ListMovementsRequest {
                serial_number: "A".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .movements;
    let kinds: Vec<(MovementKind, String)> = history
        .iter()
        .map(|m| (m.kind(), m.node_id.clone()))
        .collect();
    let k = |kind: MovementKind, node: &str| (kind, node.to_string());
    assert_eq!(
        kinds,
        [
            k(CycleCount, "DC1"),
            k(ReturnRestock, "DC1"),
            k(Shipment, "DC2"),
            k(TransferIn, "DC2"),
            k(TransferOut, "DC1"),
            k(Receipt, "DC1")
        ]
    );
    // Another item's serial numbers stay on its movement, untracked.
    item(c, "acme", "PLAIN").await;
    let m = movement(c, &rid(), Receipt, "DC1", "PLAIN", |m| {
        m.quantity = 1;
        m.serial_numbers = vec!["A".into(), "A".into()];
    })
    .await
    .unwrap();
    assert_eq!(m.serial_numbers, ["A", "A"]);
    let plain = c
        .list_serial_numbers(authed(
            "acme",
            ListSerialNumbersRequest {
                sku: "PLAIN".into(),
                include_gone: true,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .serial_numbers;
    assert!(plain.is_empty());
    // Refusals changed nothing: on-hand by the ledger agrees.
    let levels = c
        .list_stock_levels(authed("acme", ListStockLevelsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .levels;
    let on_hand: Vec<(String, i64)> = levels
        .iter()
        .filter(|l| l.sku == "PH")
        .map(|l| (l.node_id.clone(), l.on_hand))
        .collect();
    assert_eq!(on_hand, [("DC1".to_string(), 2), ("DC2".to_string(), 1)]);

    // A count that names no serials: to fewer units than serials recorded
    // there, which left is not known, so it is refused (before, B and D
    // both stayed on hand with one unit counted, and the one that had
    // left could never arrive anywhere again).
    let err = serial_move(c, CycleCount, "DC1", 1, &[]).await.unwrap_err();
    assert_eq!(
        (err.code(), reason(&err)),
        (
            Code::FailedPrecondition,
            "SERIAL_NUMBERS_NOT_COUNTED".into()
        )
    );
    assert!(err.message().contains("(B, D)"), "{err:?}");
    // To as many or more (units without records), they stay.
    let more = serial_move(c, CycleCount, "DC1", 3, &[]).await.unwrap();
    assert_eq!(more.on_hand_after, 3);
    assert_eq!(
        serials(c, "DC1", false).await,
        at(&[("B", "DC1"), ("D", "DC1")])
    );
    // To none, they have all left, and may arrive again.
    serial_move(c, CycleCount, "DC1", 0, &[]).await.unwrap();
    assert_eq!(serials(c, "DC1", false).await, at(&[]));
    serial_move(c, ReturnRestock, "DC2", 1, &["D"])
        .await
        .unwrap();
    assert_eq!(
        serials(c, "", false).await,
        at(&[("D", "DC2"), ("E", "DC2")])
    );
    // A snapshot row without serials is such a count: its error is the row's.
    let short = SnapshotRow {
        on_hand: 1,
        ..row("DC2", &[])
    };
    let resp = import_snapshot(c, vec![short]).await;
    assert_eq!(resp.rows_applied, 0);
    assert_eq!(resp.errors[0].field, "serial_numbers", "{resp:?}");
}

/// The ledger of one lot, or of one period: a period's list stays the
/// same once it has passed, since movements are listed by when they were
/// recorded.
#[tokio::test]
async fn movements_are_listed_by_lot_and_by_the_period_they_were_recorded_in() {
    use MovementKind::Receipt;
    let mut h = start().await;
    let c = &mut h.client;
    node(c, "acme", "DC1").await;
    tracked_item(c, "LOTS", |i| i.lot_tracked = true).await;
    let lot = |l: &'static str| {
        move |m: &mut StockMovement| {
            m.lot = l.into();
            m.quantity = 2;
        }
    };
    let first = movement(c, &rid(), Receipt, "DC1", "LOTS", lot("L1"))
        .await
        .unwrap();
    let second = movement(c, &rid(), Receipt, "DC1", "LOTS", lot("L2"))
        .await
        .unwrap();
    let third = movement(c, &rid(), Receipt, "DC1", "LOTS", lot("L1"))
        .await
        .unwrap();
    let mut list = async |f: ListMovementsRequest| -> Result<Vec<String>, tonic::Status> {
        let req = ListMovementsRequest {
            sku: "LOTS".into(),
            ..f
        };
        let page = c.list_movements(authed("acme", req)).await?.into_inner();
        Ok(page.movements.into_iter().map(|m| m.movement_id).collect())
    };
    let ids = |ms: &[&StockMovement]| -> Vec<String> {
        ms.iter().map(|m| m.movement_id.clone()).collect()
    };
    let of_l1 = ListMovementsRequest {
        lot: "L1".into(),
        ..Default::default()
    };
    assert_eq!(list(of_l1).await.unwrap(), ids(&[&third, &first]));
    // From the second's record time (included) to the third's (excluded).
    let period = ListMovementsRequest {
        record_time_from: second.record_time,
        record_time_to: third.record_time,
        ..Default::default()
    };
    assert_eq!(list(period).await.unwrap(), ids(&[&second]));
    let from_second = ListMovementsRequest {
        record_time_from: second.record_time,
        ..Default::default()
    };
    assert_eq!(list(from_second).await.unwrap(), ids(&[&third, &second]));
    let backwards = ListMovementsRequest {
        record_time_from: third.record_time,
        record_time_to: first.record_time,
        ..Default::default()
    };
    let err = list(backwards).await.unwrap_err();
    assert_eq!(fields(&err), ["record_time_to"]);
}

/// Movements are listed by what caused them (a fulfillment order, an ASN);
/// those recorded before the reference was a column are found once a
/// starting service has copied theirs.
#[tokio::test]
async fn movements_are_listed_by_their_reference_older_ones_once_copied() {
    let mut h = start().await;
    node(&mut h.client, "acme", "DC1").await;
    item(&mut h.client, "acme", "REF").await;
    let c = &mut h.client;
    let mut recorded = vec![];
    for reference in ["asn-1", "asn-2", "asn-1", ""] {
        let m = movement(c, &rid(), MovementKind::Receipt, "DC1", "REF", |m| {
            m.quantity = 1;
            m.reference = reference.into();
        })
        .await
        .unwrap();
        recorded.push(m.movement_id);
    }
    let of_asn_1 = async |c: &mut Client| -> Vec<String> {
        let req = ListMovementsRequest {
            reference: "asn-1".into(),
            ..Default::default()
        };
        let page = c.list_movements(authed("acme", req)).await.unwrap();
        let page = page.into_inner().movements;
        page.into_iter().map(|m| m.movement_id).collect()
    };
    let expected = [recorded[2].clone(), recorded[0].clone()];
    assert_eq!(of_asn_1(c).await, expected);
    let too_long = ListMovementsRequest {
        reference: "x".repeat(201),
        ..Default::default()
    };
    let err = c
        .list_movements(authed("acme", too_long))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["reference"]);
    // So are a node and a SKU no movement can name.
    let odd = ListMovementsRequest {
        node_id: "DC 1".into(),
        sku: "a/b".into(),
        ..Default::default()
    };
    let err = c.list_movements(authed("acme", odd)).await.unwrap_err();
    assert_eq!(fields(&err), ["node_id", "sku"]);
    // An unknown kind is refused, not an empty list.
    let unknown = ListMovementsRequest {
        kinds: vec![MovementKind::Receipt as i32, 42, 0],
        ..Default::default()
    };
    let err = c.list_movements(authed("acme", unknown)).await.unwrap_err();
    assert_eq!(fields(&err), ["kinds[1]", "kinds[2]"]);

    // As if recorded before the column: not found by reference, until a
    // service starts and copies the references from the documents.
    let mut db = h.db.connect("inventory").await;
    sqlx::query("UPDATE movements SET reference = NULL")
        .execute(&mut db)
        .await
        .unwrap();
    assert_eq!(of_asn_1(c).await, Vec::<String>::new());
    let config = oms_testkit::config_with(Service::Inventory, &h.db, &[], &[]);
    let _restarted = oms_testkit::spawn(config, oms_inventory::run).await;
    wait_until(async || of_asn_1(c).await == expected).await;
    let (left, without): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE reference IS NULL), count(*) FILTER (WHERE reference = '')
         FROM movements",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!((left, without), (0, 1), "every reference copied");
}

/// An import counts most rows (items that track no serial numbers, at
/// nodes the tenant may use) a run at a time, and records or refuses each
/// as a count of its own would be: its movement, its event (with what
/// reservations hold beyond the stock), the gate; a refused row leaves no
/// lot behind. Other rows go one by one in between.
#[tokio::test]
async fn an_import_counts_rows_in_runs_as_it_would_one_by_one() {
    use MovementKind::{CycleCount, Receipt};
    let mut h = start().await;
    let c = &mut h.client;
    node(c, "acme", "DC1").await;
    node(c, "acme", "DC2").await;
    c.update_node(authed("acme", enabling("DC2", false)))
        .await
        .unwrap();
    for sku in ["A", "C", "D"] {
        item(c, "acme", sku).await;
    }
    tracked_item(c, "B", |i| i.lot_tracked = true).await;
    tracked_item(c, "E", |i| {
        i.lot_tracked = true;
        i.expiry_tracked = true;
    })
    .await;
    tracked_item(c, "F", |i| i.serial_tracked = true).await;
    receive(c, "acme", "DC1", "A", 10).await;
    // An untracked item may be given a date: its lot keeps it.
    movement(c, &rid(), Receipt, "DC1", "D", |m| {
        m.quantity = 4;
        m.expiry_date = "2030-01-01".into();
    })
    .await
    .unwrap();
    reserve(c, "acme", "r", vec![line("A", "DC1", 8)])
        .await
        .unwrap();
    let mut feed = c
        .watch_inventory_events(authed("acme", WatchInventoryEventsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let row = |node: &str, sku: &str, lot: &str, on_hand| SnapshotRow {
        node_id: node.into(),
        sku: sku.into(),
        lot: lot.into(),
        on_hand,
        ..Default::default()
    };
    let rows = vec![
        row("DC1", "C", "", 7),
        row("DC2", "A", "", 5),
        row("DC1", "B", "L1", 2),
        row("DC1", "A", "", 3),
        row("DC9", "A", "", 1),
        row("DC1", "D", "", 6),
        // A new lot of an item that tracks expiry, without its date.
        row("DC1", "E", "E1", 4),
        // A lot of an item that tracks none.
        row("DC1", "C", "X", 1),
        SnapshotRow {
            serial_numbers: vec!["SN1".into()],
            ..row("DC1", "F", "", 1)
        },
        SnapshotRow {
            expiry_date: "2031-01-01".into(),
            ..row("DC1", "E", "E2", 3)
        },
    ];
    let resp = import_snapshot(c, rows).await;
    assert_eq!(resp.rows_applied, 7, "{:?}", resp.errors);
    let bad: Vec<_> = (resp.errors.iter())
        .map(|e| (e.row_index, e.field.as_str()))
        .collect();
    assert_eq!(bad, [(4, "node_id"), (6, "expiry_date"), (7, "lot")]);
    // The refused rows' lots were never made.
    for (sku, lots) in [("E", ["E2"]), ("C", [""])] {
        let levels = stock_levels(c, "DC1", sku).await;
        let got: Vec<_> = levels.iter().map(|l| l.lot.as_str()).collect();
        assert_eq!(got, lots, "{sku}");
    }
    let short: Vec<_> = (resp.shortfalls.iter())
        .map(|s| (s.node_id.as_str(), s.sku.as_str(), s.held_beyond_stock))
        .collect();
    assert_eq!(short, [("DC1", "A", 5)]);
    // The ledger: one count per row, as RecordMovement would write it.
    let counts = c
        .list_movements(authed(
            "acme",
            ListMovementsRequest {
                kinds: vec![CycleCount as i32],
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .movements;
    let mut got: Vec<_> = (counts.iter())
        .map(|m| {
            let at = (m.node_id.as_str(), m.sku.as_str(), m.lot.as_str());
            (at, m.quantity, m.on_hand_after, m.expiry_date.as_str())
        })
        .collect();
    got.sort();
    let want = [
        (("DC1", "A", ""), -7, 3, ""),
        (("DC1", "B", "L1"), 2, 2, ""),
        (("DC1", "C", ""), 7, 7, ""),
        (("DC1", "D", ""), 2, 6, "2030-01-01"),
        (("DC1", "E", "E2"), 3, 3, "2031-01-01"),
        (("DC1", "F", ""), 1, 1, ""),
        (("DC2", "A", ""), 5, 5, ""),
    ];
    assert_eq!(got, want);
    let reference = &counts[0].reference;
    assert!(reference.starts_with("snapshotImports/"), "{reference}");
    let of_import = c
        .list_movements(authed(
            "acme",
            ListMovementsRequest {
                reference: reference.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .movements;
    assert_eq!(of_import, counts, "the import's counts, by its reference");
    for m in &counts {
        assert_eq!(m.reason, "snapshot import from wms", "{m:?}");
        assert_eq!(m.counted_quantity, Some(m.on_hand_after), "{m:?}");
        assert!(!m.actor.is_empty() && m.occur_time.is_some(), "{m:?}");
    }
    // One event per count, A's at DC1 saying what the reservation holds
    // beyond its stock.
    let mut moved = vec![];
    while moved.len() < counts.len() {
        let ev = feed.message().await.unwrap().unwrap().event.unwrap();
        if let Some(inventory_event::Kind::StockMoved(e)) = ev.kind
            && let Some(m) = e.movement.filter(|m| m.kind == CycleCount as i32)
        {
            moved.push((m.node_id, m.sku, m.quantity, e.held_beyond_stock));
        }
    }
    moved.sort();
    let held: Vec<_> = (moved.iter())
        .map(|(n, s, q, h)| (n.as_str(), s.as_str(), *q, *h))
        .collect();
    assert_eq!(
        held,
        [
            ("DC1", "A", -7, 5),
            ("DC1", "B", 2, 0),
            ("DC1", "C", 7, 0),
            ("DC1", "D", 2, 0),
            ("DC1", "E", 3, 0),
            ("DC1", "F", 1, 0),
            ("DC2", "A", 5, 0),
        ]
    );
    // The gate agrees with the record: C's seven units and no more, none
    // of A (DC1's are held, DC2 is disabled).
    reserve(c, "acme", "c7", vec![line("C", "", 7)])
        .await
        .unwrap();
    for (sku, id) in [("C", "c8"), ("A", "a1")] {
        let err = reserve(c, "acme", id, vec![line(sku, "", 1)])
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{sku}: {err:?}");
    }
    assert_eq!(available(c, "acme", "D").await.available, 6);
    no_drift(c).await;
}

/// A chunk takes up to 1,000 rows, of which up to 200 go one by one (a
/// serial-tracked item's): a large import mixing both applies every row
/// once, and the record and the figures agree with it.
#[tokio::test]
async fn a_large_import_of_rows_in_runs_and_one_by_one_applies_each_row_once() {
    let mut h = start().await;
    let c = &mut h.client;
    let skus = grid(c).await;
    tracked_item(c, "T", |i| {
        i.lot_tracked = true;
        i.serial_tracked = true;
    })
    .await;
    // By their order: N00's rows in a run, 250 lots of T there one by one,
    // then the other nodes' rows in runs.
    let mut rows = grid_count(&skus, 2);
    rows.extend((0..250).map(|l| SnapshotRow {
        node_id: "N00".into(),
        sku: "T".into(),
        lot: format!("L{l:03}"),
        on_hand: 1,
        ..Default::default()
    }));
    let resp = import_snapshot(c, rows).await;
    assert_eq!(resp.rows_applied, 1450, "{:?}", resp.errors);
    let mut db = h.db.connect("inventory").await;
    let (movements, on_hand): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM movements), (SELECT sum(on_hand)::int8 FROM stock)",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!((movements, on_hand), (1450, 1200 * 2 + 250));
    assert_eq!(available(c, "acme", "P042").await.available, 24);
    assert_eq!(available(c, "acme", "T").await.available, 250);
    no_drift(c).await;
}

/// An import takes its lots in the order every change of several lots
/// takes them (node, SKU, lot): transfers both ways between two of its
/// nodes while it runs all go through (no deadlock for Postgres to break),
/// and the gate agrees with the record after.
#[tokio::test]
async fn transfers_while_an_import_counts_their_lots_all_go_through() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let mut h = start().await;
    let skus = grid(&mut h.client).await;
    let resp = import_snapshot(&mut h.client, grid_count(&skus, 50)).await;
    assert_eq!(resp.rows_applied, 1200);
    let importing = std::sync::Arc::new(AtomicBool::new(true));
    // N00 and N09: lots of the import's first chunk.
    let transfers: Vec<_> = (0..4)
        .map(|w| {
            let (mut c, importing) = (h.client.clone(), importing.clone());
            tokio::spawn(async move {
                let mut done = 0;
                while importing.load(Ordering::Relaxed) {
                    let (from, to) = if (w + done) % 2 == 0 {
                        ("N00", "N09")
                    } else {
                        ("N09", "N00")
                    };
                    let req = TransferStockRequest {
                        request_id: rid(),
                        from_node_id: from.into(),
                        to_node_id: to.into(),
                        sku: format!("P{:03}", (w * 31 + done * 7) % 100),
                        quantity: 1,
                        reason: "rebalance".into(),
                        ..Default::default()
                    };
                    c.transfer_stock(authed("acme", req)).await.unwrap();
                    done += 1;
                }
                done
            })
        })
        .collect();
    let counted = import_snapshot(&mut h.client, grid_count(&skus, 40)).await;
    importing.store(false, Ordering::Relaxed);
    assert_eq!(counted.rows_applied, 1200, "{:?}", counted.errors);
    for t in transfers {
        assert!(t.await.unwrap() > 0, "a worker transferred nothing");
    }
    no_drift(&mut h.client).await;
}

/// Callers moving lots of two lot-tracked SKUs at two nodes at once
/// (receipts, damage, transfers between the nodes, snapshot imports of
/// several lots) never deadlock: a change takes its SKUs' locks at their
/// nodes before their lots' (since 2026-12-04), all in one order. Every
/// call is answered, or refused for what it asked (never `UNAVAILABLE`,
/// `TRANSACTION_CONFLICT`), and each lot's on-hand is the sum of its
/// movements. Prints its seed (`LOTS_SEED=…` replays the choices).
#[tokio::test]
async fn lots_moved_at_once_by_many_callers_never_deadlock() {
    use rand::{Rng, SeedableRng, rngs::StdRng, seq::IndexedRandom};
    const NODES: [&str; 2] = ["DC1", "DC2"];
    const SKUS: [&str; 2] = ["P", "Q"];
    const LOTS: [&str; 3] = ["L1", "L2", "L3"];
    let mut h = start().await;
    for n in NODES {
        node(&mut h.client, "acme", n).await;
    }
    for s in SKUS {
        tracked_item(&mut h.client, s, |i| i.lot_tracked = true).await;
    }
    let seed: u64 =
        std::env::var("LOTS_SEED").map_or_else(|_| rand::random(), |s| s.parse().unwrap());
    eprintln!("LOTS_SEED={seed}");
    let callers = (0..6u64).map(|w| {
        let mut c = h.client.clone();
        tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed.wrapping_add(w));
            let pick = |rng: &mut StdRng| {
                let node = *NODES.choose(rng).unwrap();
                let sku = *SKUS.choose(rng).unwrap();
                (node, sku, *LOTS.choose(rng).unwrap())
            };
            for _ in 0..25 {
                let (node, sku, lot) = pick(&mut rng);
                let answer = match rng.random_range(0..4) {
                    kind @ (0 | 1) => {
                        let (kind, q) = match kind {
                            0 => (MovementKind::Receipt, rng.random_range(1..6)),
                            _ => (MovementKind::Damage, -rng.random_range(1..3)),
                        };
                        movement(&mut c, &rid(), kind, node, sku, |m| {
                            m.lot = lot.into();
                            m.quantity = q;
                            m.reason = "random".into();
                        })
                        .await
                        .map(drop)
                    }
                    2 => {
                        let to = if node == "DC1" { "DC2" } else { "DC1" };
                        let req = TransferStockRequest {
                            request_id: rid(),
                            from_node_id: node.into(),
                            to_node_id: to.into(),
                            sku: sku.into(),
                            lot: lot.into(),
                            quantity: rng.random_range(1..3),
                            reason: "random".into(),
                            ..Default::default()
                        };
                        c.transfer_stock(authed("acme", req)).await.map(drop)
                    }
                    _ => {
                        // Up to three lots, each named once.
                        let lots: std::collections::BTreeSet<_> =
                            (0..3).map(|_| pick(&mut rng)).collect();
                        let rows = (lots.into_iter())
                            .map(|(node, sku, lot)| SnapshotRow {
                                node_id: node.into(),
                                sku: sku.into(),
                                lot: lot.into(),
                                on_hand: rng.random_range(0..10),
                                ..Default::default()
                            })
                            .collect();
                        let stream = tokio_stream::iter(snapshot_msgs(&rid(), rows));
                        c.import_stock_snapshot(authed("acme", stream))
                            .await
                            .map(drop)
                    }
                };
                if let Err(st) = answer {
                    let refused = [Code::FailedPrecondition, Code::InvalidArgument];
                    assert!(refused.contains(&st.code()), "{st:?}");
                }
            }
        })
    });
    for caller in callers.collect::<Vec<_>>() {
        caller.await.unwrap();
    }
    for node in NODES {
        for sku in SKUS {
            for level in stock_levels(&mut h.client, node, sku).await {
                let req = ListMovementsRequest {
                    node_id: node.into(),
                    sku: sku.into(),
                    lot: level.lot.clone(),
                    page_size: 1000,
                    ..Default::default()
                };
                let page = h.client.list_movements(authed("acme", req)).await.unwrap();
                let page = page.into_inner();
                assert!(page.next_page_token.is_empty());
                let sum: i64 = page.movements.iter().map(|m| m.quantity).sum();
                assert_eq!(sum, level.on_hand, "{node} {sku} {}", level.lot);
            }
        }
    }
}
