//! Lots past their expiry date: on hand, never promised; the date comes
//! at the start of that day in the node's time zone.
use super::*;
use chrono::Utc;
use oms_testkit::authed;

/// Receives `q` units of lot `lot` dated `expiry` at `node` (acme).
async fn receive_lot(c: &mut Client, node: &str, sku: &str, lot: &str, expiry: &str, q: i64) {
    movement(c, &rid(), MovementKind::Receipt, node, sku, |m| {
        m.lot = lot.into();
        m.expiry_date = expiry.into();
        m.quantity = q;
    })
    .await
    .unwrap();
}

/// (lot, on hand, expired) of each lot of a SKU at a node.
async fn lots(c: &mut Client, node: &str, sku: &str) -> Vec<(String, i64, bool)> {
    stock_levels(c, node, sku)
        .await
        .into_iter()
        .map(|l| (l.lot, l.on_hand, l.expired))
        .collect()
}

/// Moves `tenant`'s node `node` to UTC+14: a date that has come there is
/// a day or two away at UTC-12.
async fn zone_ahead(c: &mut Client, tenant: &str, node: &str) {
    c.update_node(authed(
        tenant,
        UpdateNodeRequest {
            request_id: rid(),
            node: Some(Node {
                name: format!("nodes/{node}"),
                time_zone: "Etc/GMT-14".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["time_zone".into()],
            }),
        },
    ))
    .await
    .unwrap();
}

/// Today at UTC+14, as a lot's date.
fn today_ahead() -> String {
    let ahead: chrono_tz::Tz = "Etc/GMT-14".parse().unwrap();
    Utc::now()
        .with_timezone(&ahead)
        .format("%Y-%m-%d")
        .to_string()
}

/// The next `LotExpired` on an inventory feed.
async fn next_lot_expired(feed: &mut tonic::Streaming<WatchInventoryEventsResponse>) -> LotExpired {
    loop {
        let ev = feed.message().await.unwrap().unwrap().event.unwrap();
        if let Some(inventory_event::Kind::LotExpired(e)) = ev.kind {
            return e;
        }
    }
}

fn milk(i: &mut Item) {
    i.lot_tracked = true;
    i.expiry_tracked = true;
}

#[tokio::test]
async fn a_lot_past_its_date_is_on_hand_but_never_promised() {
    let mut h = start().await;
    let c = &mut h.client;
    node(c, "acme", "DC1").await;
    tracked_item(c, "MILK", milk).await;
    receive_lot(c, "DC1", "MILK", "OLD", "2000-01-01", 5).await;
    receive_lot(c, "DC1", "MILK", "NEW", "2099-12-31", 3).await;
    assert_eq!(
        lots(c, "DC1", "MILK").await,
        [("NEW".into(), 3, false), ("OLD".into(), 5, true)]
    );
    let a = available(c, "acme", "MILK").await;
    assert_eq!((a.on_hand, a.expired, a.available), (8, 5, 3));
    let short = reserve(c, "acme", "r4", vec![line("MILK", "", 4)])
        .await
        .unwrap_err();
    assert_eq!(reason(&short), "INSUFFICIENT_STOCK");
    reserve(c, "acme", "r3", vec![line("MILK", "", 3)])
        .await
        .unwrap();
    no_drift(c).await;

    // More units of the expired lot: the lot keeps its date (the restock
    // need not repeat it), and nothing more is promised.
    let restock = movement(c, &rid(), MovementKind::ReturnRestock, "DC1", "MILK", |m| {
        m.lot = "OLD".into();
        m.quantity = 1;
    })
    .await
    .unwrap();
    assert_eq!(restock.expiry_date, "2000-01-01");
    let a = available(c, "acme", "MILK").await;
    assert_eq!((a.on_hand, a.expired, a.available), (9, 6, 0));
    no_drift(c).await;

    // A count that restates the lot's date (a label misread at receipt)
    // brings its units back.
    movement(c, &rid(), MovementKind::CycleCount, "DC1", "MILK", |m| {
        m.lot = "OLD".into();
        m.expiry_date = "2099-01-01".into();
        m.counted_quantity = Some(6);
    })
    .await
    .unwrap();
    let a = available(c, "acme", "MILK").await;
    assert_eq!((a.on_hand, a.expired, a.available), (9, 0, 6));
    reserve(c, "acme", "r6", vec![line("MILK", "", 6)])
        .await
        .unwrap();
    no_drift(c).await;
}

#[tokio::test]
async fn a_lot_leaves_availability_when_its_date_comes_at_its_node() {
    let mut h = start().await;
    let c = &mut h.client;
    // Twelve hours behind UTC: a date that has come fourteen hours ahead of
    // UTC is a day or two away here.
    node_with(c, "acme", "WEST", |n| n.time_zone = "Etc/GMT+12".into()).await;
    tracked_item(c, "MILK", milk).await;
    let ahead: chrono_tz::Tz = "Etc/GMT-14".parse().unwrap();
    let date = Utc::now()
        .with_timezone(&ahead)
        .format("%Y-%m-%d")
        .to_string();
    receive_lot(c, "WEST", "MILK", "L1", &date, 4).await;
    // Three units held there by a reservation that names the node.
    reserve(c, "acme", "held", vec![line("MILK", "WEST", 3)])
        .await
        .unwrap();
    assert_eq!(available(c, "acme", "MILK").await.available, 1);
    let mut feed = c
        .watch_inventory_events(authed("acme", WatchInventoryEventsRequest::default()))
        .await
        .unwrap()
        .into_inner();

    // The node turns out to be fourteen hours ahead: the date has come.
    zone_ahead(c, "acme", "WEST").await;
    let expired = next_lot_expired(&mut feed).await;
    assert_eq!(
        (
            expired.node_id.as_str(),
            expired.lot.as_str(),
            expired.expiry_date.as_str(),
            expired.on_hand
        ),
        ("WEST", "L1", date.as_str(), 4)
    );
    assert_eq!(
        expired.held_beyond_stock, 3,
        "the reservation rests on expired stock"
    );
    assert_eq!(lots(c, "WEST", "MILK").await, [("L1".into(), 4, true)]);
    let a = available(c, "acme", "MILK").await;
    assert_eq!((a.on_hand, a.expired, a.available), (4, 4, 0));
    let short = reserve(c, "acme", "r1", vec![line("MILK", "", 1)])
        .await
        .unwrap_err();
    assert_eq!(reason(&short), "INSUFFICIENT_STOCK");
    no_drift(c).await;
}

#[tokio::test]
async fn shipping_from_an_expired_lot_frees_what_its_allocation_held() {
    let mut h = start().await;
    let c = &mut h.client;
    node(c, "acme", "DC1").await;
    tracked_item(c, "MILK", milk).await;
    receive_lot(c, "DC1", "MILK", "NEW", "2099-12-31", 5).await;
    confirmed_at_dc1(c, "r", "MILK", 3).await;
    // Expired stock found in a count after the allocation.
    movement(c, &rid(), MovementKind::CycleCount, "DC1", "MILK", |m| {
        m.lot = "OLD".into();
        m.expiry_date = "2000-01-01".into();
        m.counted_quantity = Some(2);
    })
    .await
    .unwrap();
    assert_eq!(available(c, "acme", "MILK").await.available, 2);

    // The warehouse ships two units of the expired lot and one of the
    // other: the promised lot keeps four units, none held any more.
    ship(
        c,
        "r",
        vec![
            shipped("MILK", 2, "OLD", &[]),
            shipped("MILK", 1, "NEW", &[]),
        ],
    )
    .await
    .unwrap();
    let a = available(c, "acme", "MILK").await;
    assert_eq!(
        (a.on_hand, a.expired, a.reserved, a.available),
        (4, 0, 0, 4)
    );
    no_drift(c).await;
    reserve(c, "acme", "all", vec![line("MILK", "", 4)])
        .await
        .unwrap();
}

#[tokio::test]
async fn a_transferred_lot_arrives_with_its_date() {
    let mut h = start().await;
    let c = &mut h.client;
    node(c, "acme", "DC1").await;
    node(c, "acme", "DC2").await;
    tracked_item(c, "MILK", milk).await;
    receive_lot(c, "DC1", "MILK", "NEW", "2099-12-31", 5).await;
    receive_lot(c, "DC1", "MILK", "OLD", "2000-01-01", 2).await;
    for (lot, q) in [("NEW", 3), ("OLD", 2)] {
        let t = c
            .transfer_stock(authed(
                "acme",
                TransferStockRequest {
                    request_id: rid(),
                    from_node_id: "DC1".into(),
                    to_node_id: "DC2".into(),
                    sku: "MILK".into(),
                    lot: lot.into(),
                    quantity: q,
                    reason: "rebalance".into(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner();
        let out = t.transfer_out.unwrap().expiry_date;
        assert_eq!(t.transfer_in.unwrap().expiry_date, out, "lot {lot}");
    }
    assert_eq!(
        lots(c, "DC2", "MILK").await,
        [("NEW".into(), 3, false), ("OLD".into(), 2, true)]
    );
    let a = available(c, "acme", "MILK").await;
    assert_eq!((a.on_hand, a.expired, a.available), (7, 2, 5));
    no_drift(c).await;
}

/// Sets acme's MILK minimum shelf life.
async fn shelf_life(c: &mut Client, days: i32) -> Result<Item, tonic::Status> {
    shelf_life_of(c, "MILK", days).await
}

/// Sets the minimum shelf life of acme's item `sku`.
async fn shelf_life_of(c: &mut Client, sku: &str, days: i32) -> Result<Item, tonic::Status> {
    c.update_item(authed(
        "acme",
        UpdateItemRequest {
            request_id: rid(),
            item: Some(Item {
                name: format!("items/{sku}"),
                min_shelf_life_days: days,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["min_shelf_life_days".into()],
            }),
        },
    ))
    .await
    .map(|r| r.into_inner().item.unwrap())
}

/// `days` from today (UTC), as a lot's date.
fn in_days(days: i64) -> String {
    (Utc::now().date_naive() + chrono::Duration::days(days))
        .format("%Y-%m-%d")
        .to_string()
}

#[tokio::test]
async fn a_minimum_shelf_life_withdraws_lots_that_many_days_early() {
    let mut h = start().await;
    let c = &mut h.client;
    node(c, "acme", "DC1").await;
    tracked_item(c, "MILK", milk).await;
    receive_lot(c, "DC1", "MILK", "A", &in_days(10), 4).await;
    receive_lot(c, "DC1", "MILK", "B", &in_days(40), 3).await;
    assert_eq!(available(c, "acme", "MILK").await.available, 7);
    let mut feed = c
        .watch_inventory_events(authed("acme", WatchInventoryEventsRequest::default()))
        .await
        .unwrap()
        .into_inner();

    // Thirty days of shelf life: lot A (ten days left) is withdrawn at once.
    assert_eq!(shelf_life(c, 30).await.unwrap().min_shelf_life_days, 30);
    let levels = stock_levels(c, "", "MILK").await;
    let dates: Vec<(&str, &str, bool)> = levels
        .iter()
        .map(|l| (l.lot.as_str(), l.withdraw_date.as_str(), l.expired))
        .collect();
    assert_eq!(
        dates,
        [
            ("A", in_days(-20).as_str(), true),
            ("B", in_days(10).as_str(), false)
        ]
    );
    let a = available(c, "acme", "MILK").await;
    assert_eq!((a.on_hand, a.expired, a.available), (7, 4, 3));
    // A lot received with less than that left is not promised either.
    receive_lot(c, "DC1", "MILK", "C", &in_days(20), 5).await;
    assert_eq!(available(c, "acme", "MILK").await.available, 3);
    no_drift(c).await;
    // What leaves availability within five days (A and C have already;
    // B goes in ten).
    let leaving = |before: String| ListStockLevelsRequest {
        withdraw_before: before,
        ..Default::default()
    };
    let soon = c
        .list_stock_levels(authed("acme", leaving(in_days(5))))
        .await
        .unwrap()
        .into_inner()
        .levels;
    let soon: Vec<&str> = soon.iter().map(|l| l.lot.as_str()).collect();
    assert_eq!(soon, ["A", "C"]);
    let err = c
        .list_stock_levels(authed("acme", leaving("soon".into())))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["withdraw_before"]);
    let odd = ListStockLevelsRequest {
        node_id: "DC 1".into(),
        skus: vec!["MILK".into(), "a b".into()],
        ..Default::default()
    };
    let err = c.list_stock_levels(authed("acme", odd)).await.unwrap_err();
    assert_eq!(fields(&err), ["node_id", "skus[1]"]);

    // Five days: both come back.
    shelf_life(c, 5).await.unwrap();
    let a = available(c, "acme", "MILK").await;
    assert_eq!((a.on_hand, a.expired, a.available), (12, 0, 12));
    reserve(c, "acme", "all", vec![line("MILK", "", 12)])
        .await
        .unwrap();
    no_drift(c).await;
    let mut seen = vec![];
    while seen.len() < 3 {
        match feed.message().await.unwrap().unwrap().event.unwrap().kind {
            Some(inventory_event::Kind::LotExpired(e)) => seen.push(("expired", e.lot)),
            Some(inventory_event::Kind::LotRestored(e)) => seen.push(("restored", e.lot)),
            _ => {}
        }
    }
    assert_eq!(
        seen,
        [
            ("expired", "A".to_string()),
            ("restored", "A".to_string()),
            ("restored", "C".to_string())
        ]
    );
}

#[tokio::test]
async fn a_minimum_shelf_life_is_checked() {
    let mut h = start().await;
    let c = &mut h.client;
    tracked_item(c, "MILK", milk).await;
    tracked_item(c, "LOT", |i| i.lot_tracked = true).await;
    let err = shelf_life(c, 3651).await.unwrap_err();
    assert_eq!(fields(&err), ["item.min_shelf_life_days"]);
    let err = shelf_life_of(c, "LOT", 7).await.unwrap_err();
    assert_eq!(fields(&err), ["item.min_shelf_life_days"]);
    assert!(
        err.message().contains("expiry_tracked"),
        "{}",
        err.message()
    );
}

/// A receipt in flight while the item's minimum shelf life changes: the
/// update waits for it, then dates its lot by the new shelf life (without
/// the wait, the update missed the lot it could not see yet, and the
/// receipt dated it by the old one: promised).
#[tokio::test]
async fn a_receipt_during_a_shelf_life_change_is_dated_by_the_new_one() {
    use super::recovery::done_or_waiting;
    let mut h = start().await;
    node(&mut h.client, "acme", "DC1").await;
    tracked_item(&mut h.client, "MILK", milk).await;
    // The receipt pauses just before its commit (its answer is stored
    // with its request id).
    let mut held = movements_paused_before_commit(&h.db).await;
    let receipt = tokio::spawn({
        let mut c = h.client.clone();
        async move { receive_lot(&mut c, "DC1", "MILK", "C", &in_days(20), 5).await }
    });
    held.awaited(&h.db).await;
    let update = tokio::spawn({
        let mut c = h.client.clone();
        async move { shelf_life(&mut c, 30).await }
    });
    done_or_waiting(&h.db, &update).await;
    held.release().await;
    receipt.await.unwrap();
    update.await.unwrap().unwrap();
    let a = available(&mut h.client, "acme", "MILK").await;
    assert_eq!((a.on_hand, a.expired, a.available), (5, 5, 0));
    no_drift(&mut h.client).await;
}

/// A confirmation says, per allocation of an item that tracks expiry, the
/// earliest expiry date of a lot its node may ship: one it still promised
/// (the date there, plus the minimum shelf life, plus one).
#[tokio::test]
async fn a_confirmation_names_the_earliest_expiry_to_ship() {
    let mut h = start().await;
    let c = &mut h.client;
    node(c, "acme", "DC1").await;
    tracked_item(c, "MILK", milk).await;
    item(c, "acme", "S").await;
    receive_lot(c, "DC1", "MILK", "A", &in_days(90), 5).await;
    receive(c, "acme", "DC1", "S", 5).await;
    shelf_life(c, 30).await.unwrap();
    confirmed_at_dc1(c, "milk", "MILK", 2).await;
    confirmed_at_dc1(c, "plain", "S", 2).await;
    let allocation = async |c: &mut Client, id: &str| {
        let r = reservation(c, "acme", id).await;
        r.lines[0].allocations[0].min_expiry_date.clone()
    };
    // DC1 has no time zone: UTC.
    let first = allocation(c, "milk").await;
    assert!(first == in_days(31) || first == in_days(30), "{first}");
    assert_eq!(allocation(c, "plain").await, "");

    // The date is as of the read, not of the confirmation: an order
    // released later (days later, or after a new minimum shelf life) ships
    // only lots still promised then.
    shelf_life(c, 40).await.unwrap();
    let later = allocation(c, "milk").await;
    assert!(later == in_days(41) || later == in_days(40), "{later}");
    let listed = c
        .list_reservations(authed("acme", ListReservationsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .reservations;
    let dates: Vec<(&str, &str)> = listed
        .iter()
        .map(|r| {
            let a = &r.lines[0].allocations[0];
            (r.reservation_id.as_str(), a.min_expiry_date.as_str())
        })
        .collect();
    let mut dates = dates;
    dates.sort();
    assert_eq!(dates, [("milk", later.as_str()), ("plain", "")]);

    // Shipped in full, an allocation keeps the date as of its shipment.
    ship(c, "milk", vec![shipped("MILK", 2, "A", &[])])
        .await
        .unwrap();
    shelf_life(c, 10).await.unwrap();
    assert_eq!(allocation(c, "milk").await, later);
}

/// A node `W-{tenant}` at UTC-12 with 4 units of MILK in lot L1, dated
/// today at UTC+14: due once the node moves there (`zone_ahead`).
async fn milk_due_ahead(c: &mut Client, tenant: &str) {
    node_with(c, tenant, &format!("W-{tenant}"), |n| {
        n.time_zone = "Etc/GMT+12".into()
    })
    .await;
    let mut item = Item {
        sku: "MILK".into(),
        ..Default::default()
    };
    milk(&mut item);
    let req = CreateItemRequest {
        request_id: rid(),
        item: Some(item),
    };
    c.create_item(authed(tenant, req)).await.unwrap();
    let receipt = StockMovement {
        kind: MovementKind::Receipt as i32,
        node_id: format!("W-{tenant}"),
        sku: "MILK".into(),
        lot: "L1".into(),
        expiry_date: today_ahead(),
        quantity: 4,
        ..Default::default()
    };
    let req = RecordMovementRequest {
        request_id: rid(),
        movement: Some(receipt),
    };
    c.record_movement(authed(tenant, req)).await.unwrap();
}

/// Whether every lot of `tenant`'s MILK is expired, read from the record
/// (a feed waits for a paused transaction).
async fn all_expired(c: &mut Client, tenant: &str) -> bool {
    let req = ListStockLevelsRequest {
        skus: vec!["MILK".into()],
        ..Default::default()
    };
    let levels = c.list_stock_levels(authed(tenant, req)).await.unwrap();
    levels.into_inner().levels.iter().all(|l| l.expired)
}

/// acme's count of `counted` units in `lot` of MILK at W-acme, paused
/// before its commit until the returned lock is let go.
async fn count_paused(
    db: &oms_testkit::TestDb,
    c: &Client,
    lot: &str,
    counted: i64,
) -> (
    super::recovery::Held,
    tokio::task::JoinHandle<Result<tonic::Response<RecordMovementResponse>, tonic::Status>>,
) {
    let mut held = movements_paused_before_commit(db).await;
    let m = StockMovement {
        kind: MovementKind::CycleCount as i32,
        node_id: "W-acme".into(),
        sku: "MILK".into(),
        lot: lot.into(),
        counted_quantity: Some(counted),
        ..Default::default()
    };
    let req = RecordMovementRequest {
        request_id: rid(),
        movement: Some(m),
    };
    let mut c = c.clone();
    let count = tokio::spawn(async move { c.record_movement(authed("acme", req)).await });
    held.awaited(db).await;
    (held, count)
}

/// Brings the date of acme's and zeta's L1 (`milk_due_ahead`), then waits
/// for the sweep to expire zeta's: it takes acme before zeta, so it has
/// been through acme's lots by then.
async fn due_and_swept(c: &mut Client) {
    zone_ahead(c, "acme", "W-acme").await;
    zone_ahead(c, "zeta", "W-zeta").await;
    wait_until(async || all_expired(&mut c.clone(), "zeta").await).await;
}

/// A lot that comes due while a movement of another lot of its SKU at its
/// node is under way is skipped by the sweep (the movement holds the
/// SKU's lock there), and expires once the movement has committed: its
/// `LotExpired` then says what reservations hold beyond the stock the
/// movement left. Before 2026-12-04 the sweep expired it meanwhile (the
/// test fails there), each reading the other's lot as it was before, so
/// the expiry could say 2 where 3 were short.
#[tokio::test]
async fn the_sweep_expires_a_lot_after_a_movement_of_another_lot_of_its_sku() {
    let mut h = start().await;
    let c = &mut h.client;
    for tenant in ["acme", "zeta"] {
        milk_due_ahead(c, tenant).await;
    }
    receive_lot(c, "W-acme", "MILK", "L2", &in_days(400), 4).await;
    reserve(c, "acme", "r", vec![line("MILK", "W-acme", 6)])
        .await
        .unwrap();
    let mut acme = acme_events(c).await;
    // A count of L2 that finds one unit fewer pauses before its commit.
    let (held, count) = count_paused(&h.db, c, "L2", 3).await;
    // The sweep has passed L1 by.
    due_and_swept(c).await;
    let now = lots(c, "W-acme", "MILK").await;
    let l1 = ("L1".to_owned(), 4, false);
    assert_eq!(now, [l1, ("L2".to_owned(), 4, false)]);
    held.release().await;
    let counted = count.await.unwrap().unwrap().into_inner();
    assert_eq!(counted.held_beyond_stock, 0, "7 left for 6 held");
    let expired = next_lot_expired(&mut acme).await;
    assert_eq!(expired.lot, "L1");
    assert_eq!(expired.held_beyond_stock, 3, "3 left for 6 held");
    assert_eq!(available(c, "acme", "MILK").await.available, 0);
    no_drift(c).await;
}

/// A lot a transaction holds (a count paused before its commit) is skipped
/// by the sweep, not waited for: another tenant's lots expire meanwhile
/// (without the skip, the sweep waited on the row, and every tenant after
/// it with it), and the held lot expires once the count has committed.
#[tokio::test]
async fn the_sweep_does_not_wait_on_a_lot_in_use() {
    let mut h = start().await;
    let c = &mut h.client;
    for tenant in ["acme", "zeta"] {
        milk_due_ahead(c, tenant).await;
    }
    let mut acme = acme_events(c).await;
    // acme's count of its lot pauses before its commit, holding the lot.
    let (held, count) = count_paused(&h.db, c, "L1", 4).await;
    due_and_swept(c).await;
    held.release().await;
    count.await.unwrap().unwrap();
    let ours = next_lot_expired(&mut acme).await;
    assert_eq!((ours.node_id.as_str(), ours.on_hand), ("W-acme", 4));
    assert_eq!(available(c, "acme", "MILK").await.available, 0);
    no_drift(c).await;
}

/// A movement that takes promised units from under reservations says, in
/// its answer (a repeat's too) and its event, how many units they now hold
/// beyond the node's stock; one that leaves enough says 0. A transfer out
/// says it for the node it left, and a snapshot import for each node and
/// SKU its counts left short, after its last row.
#[tokio::test]
async fn a_movement_that_leaves_reservations_without_stock_says_so() {
    let mut h = start().await;
    stocked(&mut h, &[("S", 4), ("T", 5)]).await;
    let c = &mut h.client;
    node(c, "acme", "DC2").await;
    reserve(
        c,
        "acme",
        "r",
        vec![line("S", "DC1", 3), line("T", "DC1", 1)],
    )
    .await
    .unwrap();
    let mut feed = c
        .watch_inventory_events(authed("acme", WatchInventoryEventsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    for (q, beyond) in [(-1, 0), (-2, 2)] {
        let req = RecordMovementRequest {
            request_id: rid(),
            movement: Some(StockMovement {
                kind: MovementKind::Damage as i32,
                node_id: "DC1".into(),
                sku: "S".into(),
                quantity: q,
                reason: "dropped".into(),
                ..Default::default()
            }),
        };
        let answer = c
            .record_movement(authed("acme", req.clone()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer.held_beyond_stock, beyond, "after damage of {}", -q);
        let again = c.record_movement(authed("acme", req)).await.unwrap();
        assert_eq!(again.into_inner(), answer, "a repeat answers the same");
        let moved = loop {
            let ev = feed.message().await.unwrap().unwrap().event.unwrap();
            if let Some(inventory_event::Kind::StockMoved(e)) = ev.kind
                && e.movement.as_ref().is_some_and(|m| m.quantity == q)
            {
                break e;
            }
        };
        assert_eq!(moved.held_beyond_stock, beyond, "after damage of {}", -q);
    }
    // S: 1 on hand, 3 held. Two more, then two of the three leave.
    receive(c, "acme", "DC1", "S", 2).await;
    let transfer = |quantity| TransferStockRequest {
        request_id: rid(),
        from_node_id: "DC1".into(),
        to_node_id: "DC2".into(),
        sku: "S".into(),
        quantity,
        reason: "rebalance".into(),
        ..Default::default()
    };
    let t = c.transfer_stock(authed("acme", transfer(2))).await.unwrap();
    assert_eq!(t.into_inner().held_beyond_stock, 2, "3 held on 1");
    let t = c.transfer_stock(authed("acme", transfer(1))).await.unwrap();
    assert_eq!(t.into_inner().held_beyond_stock, 3, "3 held on none");
    // A count of T that leaves its one held unit without stock, one of S
    // at DC2 (nothing held there), and one of S at DC1 that brings back
    // the three held there. Then a count that finds T as it was: still
    // short.
    let row = |node: &str, sku: &str, on_hand| SnapshotRow {
        node_id: node.into(),
        sku: sku.into(),
        on_hand,
        ..Default::default()
    };
    let rows = vec![row("DC1", "T", 0), row("DC2", "S", 0), row("DC1", "S", 3)];
    let imported = import_snapshot(c, rows).await;
    assert_eq!(imported.rows_applied, 3, "{:?}", imported.errors);
    let short: Vec<_> = imported
        .shortfalls
        .iter()
        .map(|s| (s.node_id.as_str(), s.sku.as_str(), s.held_beyond_stock))
        .collect();
    assert_eq!(short, [("DC1", "T", 1)]);
    let again = import_snapshot(c, vec![row("DC1", "T", 0)]).await;
    assert_eq!(again.shortfalls, imported.shortfalls);
}

/// Two movements that take units from different lots of one SKU at one
/// node at once: the second reads the first's lot as it is after it, so
/// between them they say what reservations hold beyond the stock. Before
/// 2026-12-04 each read the other's lot as it was before, and both said
/// 0 while the two together left the holds a unit short.
#[tokio::test]
async fn movements_of_two_lots_at_once_say_what_they_leave_short_between_them() {
    use super::recovery::{Held, WAIT, done_or_waiting, heal, injected};
    let mut h = start().await;
    let c = &mut h.client;
    node(c, "acme", "DC1").await;
    tracked_item(c, "LOT", |i| i.lot_tracked = true).await;
    receive_lot(c, "DC1", "LOT", "A", "", 5).await;
    receive_lot(c, "DC1", "LOT", "B", "", 5).await;
    reserve(c, "acme", "r", vec![line("LOT", "DC1", 7)])
        .await
        .unwrap();
    let damage = |request_id: &str, lot: &str| {
        let movement = StockMovement {
            kind: MovementKind::Damage as i32,
            node_id: "DC1".into(),
            sku: "LOT".into(),
            lot: lot.to_owned(),
            quantity: -2,
            reason: "crushed".into(),
            ..Default::default()
        };
        let req = RecordMovementRequest {
            request_id: request_id.to_owned(),
            movement: Some(movement),
        };
        let mut c = h.client.clone();
        tokio::spawn(async move {
            let answer = c.record_movement(authed("acme", req)).await.unwrap();
            answer.into_inner().held_beyond_stock
        })
    };
    // The first pauses just before its commit (its answer is stored with
    // its request id), having left 8 for the 7 held.
    let when = "NEW.method LIKE '%RecordMovement' AND NEW.request_id = 'first'";
    injected(&h.db, "UPDATE ON idempotency", when, WAIT).await;
    let mut held = Held::new(&h.db).await;
    let first = damage("first", "A");
    held.awaited(&h.db).await;
    let second = damage("second", "B");
    done_or_waiting(&h.db, &second).await;
    held.release().await;
    assert_eq!(first.await.unwrap(), 0, "8 left for 7 held");
    assert_eq!(second.await.unwrap(), 1, "6 left for 7 held");
    heal(&h.db).await;
    let a = available(&mut h.client, "acme", "LOT").await;
    assert_eq!((a.on_hand, a.reserved), (6, 7));
}

/// Makes each `RecordMovement` wait just before its commit (its answer is
/// stored with its request id) until the returned lock is let go.
async fn movements_paused_before_commit(db: &oms_testkit::TestDb) -> super::recovery::Held {
    use super::recovery::{Held, WAIT, injected};
    injected(
        db,
        "UPDATE ON idempotency",
        "NEW.method LIKE '%RecordMovement'",
        WAIT,
    )
    .await;
    Held::new(db).await
}
