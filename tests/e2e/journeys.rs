//! Many orders at once through three simulated warehouses, two of which
//! reject or short-pick some of their work, with some orders cancelled in
//! whole or by a unit, held and released, or edited by a unit, at a random
//! step of their journey. Once every order is delivered or cancelled: no
//! unit is held anywhere, every shipped unit left inventory exactly once,
//! every order shipped what it kept, the gate agrees with the record, and
//! the web channel's orders shipped only from its pool of nodes.
use crate::placement::{order, until_counted_plans, web_pool};
use crate::shipping::{history_of, simulated_wms, warehouse_with, work_of};
use oms_e2e::Suite;
use oms_proto::fulfillment::{
    FulfillmentState, ListFulfillmentOrdersRequest,
    fulfillment_service_client::FulfillmentServiceClient,
};
use oms_proto::inventory::{self as inv, inventory_service_client::InventoryServiceClient};
use oms_proto::orders::{self as ord, OrderState, order_service_client::OrderServiceClient};
use oms_runtime::Service;
use oms_testkit::{authed, retried};
use rand::{Rng, SeedableRng, rngs::StdRng, seq::IndexedRandom};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tonic::{Code, transport::Channel};

const T: &str = "acme";
const SKUS: [&str; 3] = ["A", "B", "C"];
/// Node, priority, and the shares of its work its WMS rejects and
/// short-picks.
const NODES: [(&str, i32, (f64, f64)); 3] = [
    ("DC1", 0, (0.2, 0.2)),
    ("DC2", -5, (0.3, 0.0)),
    ("DC3", -10, (0.0, 0.0)),
];
const STOCK: i64 = 40;
/// The web channel's pool: every node but DC1 (DC3 ships whatever DC2
/// rejects, so its orders finish too).
const WEB_POOL: [&str; 2] = ["DC2", "DC3"];

/// Whether journey `i` places an order of the web channel.
fn from_web(i: usize) -> bool {
    i.is_multiple_of(3)
}
/// Each stage of a warehouse's work.
const STEP: Duration = Duration::from_millis(5);
const ORDERS: usize = 30;

/// What a journey does to its order besides placing it, once the order
/// reached a state.
#[derive(Debug, Clone, Copy)]
enum Action {
    /// Cancels the whole order.
    Cancel,
    /// Cancels one unit of its first line.
    CancelOneUnit,
    /// Places a fraud hold and releases it.
    Hold,
    /// One unit fewer on its first line (one more when it has one).
    EditDown,
    /// One unit more on its first line.
    EditUp,
}

fn plan(rng: &mut StdRng) -> Option<(Action, OrderState)> {
    let at = *[
        OrderState::Created,
        OrderState::Reserved,
        OrderState::Routed,
        OrderState::Released,
    ]
    .choose(rng)
    .unwrap();
    let action = match rng.random_range(0..10) {
        0..4 => return None,
        4 => Action::Cancel,
        5 => Action::CancelOneUnit,
        6 | 7 => Action::Hold,
        8 => Action::EditDown,
        _ => Action::EditUp,
    };
    Some((action, at))
}

/// Places one order and acts on it as planned. An action the order is
/// past (already released or shipping) may be refused. Every call is
/// retried while orders is down (a crash, in [`with_crashes`]).
async fn journey(
    orders: OrderServiceClient<Channel>,
    i: usize,
    lines: Vec<(&str, i64)>,
    plan: Option<(Action, OrderState)>,
) -> String {
    let mut placed = order(&lines);
    if from_web(i) {
        placed.channel = "channels/web".into();
    }
    let request = ord::CreateOrderRequest {
        request_id: format!("journey-{i}"),
        order: Some(placed),
    };
    let name = retried(&orders, async |c| {
        c.create_order(authed(T, request.clone())).await
    })
    .await
    .unwrap()
    .order
    .unwrap()
    .name;
    let Some((action, at)) = plan else {
        return name;
    };
    if at != OrderState::Created {
        until_reached(&orders, &name, at).await;
    }
    let request_id = format!("{action:?}-{i}");
    let first = lines[0].1;
    let line_one = |quantity: i64| {
        vec![ord::LineQuantity {
            line_id: "1".into(),
            quantity,
        }]
    };
    let edit = |quantity: i64| ord::EditOrderLinesRequest {
        request_id: request_id.clone(),
        name: name.clone(),
        lines: line_one(quantity),
        reason: "customer call".into(),
    };
    let answer = match action {
        Action::Cancel => {
            let r = ord::CancelOrderRequest {
                request_id,
                name: name.clone(),
                reason: "customer changed their mind".into(),
            };
            retried(&orders, async |c| {
                c.cancel_order(authed(T, r.clone())).await
            })
            .await
            .map(drop)
        }
        Action::CancelOneUnit => {
            let r = ord::CancelOrderLinesRequest {
                request_id,
                name: name.clone(),
                lines: line_one(1),
                reason: "one less".into(),
            };
            retried(&orders, async |c| {
                c.cancel_order_lines(authed(T, r.clone())).await
            })
            .await
            .map(drop)
        }
        Action::EditDown | Action::EditUp => {
            let r = edit(match action {
                Action::EditDown if first > 1 => first - 1,
                _ => first + 1,
            });
            retried(&orders, async |c| {
                c.edit_order_lines(authed(T, r.clone())).await
            })
            .await
            .map(drop)
        }
        Action::Hold => hold_and_release(&orders, &name, &request_id).await,
    };
    if let Err(e) = answer {
        assert_eq!(e.code(), Code::FailedPrecondition, "{action:?}: {e:?}");
    }
    name
}

/// Waits until the order's history shows `state` (or the order ended).
async fn until_reached(orders: &OrderServiceClient<Channel>, name: &str, state: OrderState) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let list = ord::ListOrderHistoryRequest {
        name: name.into(),
        page_size: 500,
        ..Default::default()
    };
    loop {
        let changes = retried(orders, async |c| {
            c.list_order_history(authed(T, list.clone())).await
        })
        .await
        .unwrap()
        .changes;
        let ended = [state, OrderState::Delivered, OrderState::Cancelled];
        if changes.iter().any(|c| ended.contains(&c.to_state())) {
            return;
        }
        assert!(Instant::now() < deadline, "{name} never reached {state:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Places a fraud hold on an order, then releases it.
async fn hold_and_release(
    orders: &OrderServiceClient<Channel>,
    name: &str,
    request_id: &str,
) -> Result<(), tonic::Status> {
    let place = ord::PlaceHoldRequest {
        request_id: request_id.into(),
        name: name.into(),
        r#type: ord::HoldType::Fraud as i32,
        reason: "review".into(),
    };
    let held = retried(orders, async |c| {
        c.place_hold(authed(T, place.clone())).await
    })
    .await?
    .order
    .unwrap();
    assert_eq!(held.state(), OrderState::OnHold);
    let release = ord::ReleaseHoldRequest {
        request_id: format!("{request_id}-release"),
        name: name.into(),
        r#type: ord::HoldType::Fraud as i32,
        reason: "cleared".into(),
    };
    retried(orders, async |c| {
        c.release_hold(authed(T, release.clone())).await
    })
    .await
    .map(drop)
}

/// Every order.
async fn states(orders: &OrderServiceClient<Channel>) -> Vec<ord::Order> {
    let list = ord::ListOrdersRequest {
        page_size: 500,
        ..Default::default()
    };
    retried(orders, async |c| {
        c.list_orders(authed(T, list.clone())).await
    })
    .await
    .unwrap()
    .orders
}

/// What crashes (and starts again) on the way.
#[derive(Debug, Clone, Copy)]
enum Crash {
    Service(Service),
    /// The simulated WMS of the `NODES` entry: it starts again with
    /// nothing of what it did, from the first command (as a WMS adapter
    /// that keeps no state would).
    Wms(usize),
}

#[tokio::test]
async fn random_orders_through_rejecting_warehouses_leave_nothing_held() {
    journeys(&[], false).await;
}

/// The same with a second orders replica, while orders, routing,
/// fulfillment, inventory and two warehouses' WMS each crash (nothing
/// drains) and start again on the way.
#[tokio::test]
async fn random_orders_through_crashes_leave_nothing_held() {
    let crashes = [
        (5, Crash::Service(Service::Orders)),
        (8, Crash::Wms(0)),
        (10, Crash::Service(Service::Routing)),
        (15, Crash::Service(Service::Fulfillment)),
        (18, Crash::Wms(1)),
        (20, Crash::Service(Service::Inventory)),
        (25, Crash::Service(Service::Orders)),
    ];
    journeys(&crashes, true).await;
}

/// Runs the journeys (with a second orders replica, which takes saga steps
/// and fulfillment events too, when `replica`), crashing each of `crashes`
/// (and starting it again) once as many journeys have done their part,
/// then checks how everything ended.
async fn journeys(crashes: &[(usize, Crash)], replica: bool) {
    let mut suite = Suite::start().await;
    let _replica = match replica {
        true => Some(suite.start_replica(Service::Orders).await),
        false => None,
    };
    let all: Vec<(&str, i64)> = SKUS.iter().map(|s| (*s, STOCK)).collect();
    // DC1 (from `stock`) ranks first, DC3 last; DC3 ships everything.
    let mut stock = suite.stock(T, &all).await;
    let mut warehouses = Vec::new();
    for (node, priority, faults) in NODES {
        if node != "DC1" {
            warehouse_with(&mut stock, node, priority, &all).await;
        }
        warehouses.push(simulated_wms(&suite, node, faults, STEP));
    }
    web_pool(&mut stock, "web-pool", &WEB_POOL).await;
    let seed: u64 = std::env::var("JOURNEY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("JOURNEY_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let orders = OrderServiceClient::new(suite.channel(Service::Orders));
    let (done, progress) = tokio::sync::watch::channel(0usize);
    let journeys = (0..ORDERS).map(|i| {
        let n = rng.random_range(1..=3);
        let skus: Vec<&str> = SKUS.choose_multiple(&mut rng, n).copied().collect();
        let lines: Vec<(&str, i64)> = skus
            .into_iter()
            .map(|s| (s, rng.random_range(1..=3)))
            .collect();
        let journey = journey(orders.clone(), i, lines, plan(&mut rng));
        let done = &done;
        async move {
            let name = journey.await;
            done.send_modify(|n| *n += 1);
            name
        }
    });
    let chaos = async {
        let mut progress = progress.clone();
        for (after, crash) in crashes {
            progress.wait_for(|n| n >= after).await.unwrap();
            match *crash {
                Crash::Service(service) => {
                    suite.crash(service).await;
                    suite.start_again(service).await;
                }
                Crash::Wms(i) => {
                    let (node, _, faults) = NODES[i];
                    // Stopped before the new one connects.
                    drop(std::mem::replace(
                        &mut warehouses[i],
                        CancellationToken::new().drop_guard(),
                    ));
                    warehouses[i] = simulated_wms(&suite, node, faults, STEP);
                }
            }
        }
    };
    let (names, ()) = tokio::join!(futures::future::join_all(journeys), chaos);

    // Every order ends delivered or cancelled (DC3 ships whatever the
    // others reject, and stock covers every order).
    let deadline = Instant::now() + Duration::from_secs(180);
    let settled = loop {
        let now = states(&orders).await;
        let open: Vec<(&str, OrderState)> = now
            .iter()
            .filter(|o| !matches!(o.state(), OrderState::Delivered | OrderState::Cancelled))
            .map(|o| (o.name.as_str(), o.state()))
            .collect();
        if open.is_empty() {
            break now;
        }
        if Instant::now() > deadline {
            let mut why = Vec::new();
            for (name, _) in &open {
                let h = history_of(&mut orders.clone(), name).await;
                let steps: Vec<String> = h
                    .iter()
                    .map(|c| format!("{:?} {}: {}", c.to_state(), c.kind, c.reason))
                    .collect();
                let work: Vec<String> = work_of(&suite, name)
                    .await
                    .iter()
                    .map(|f| format!("{} at {}: {:?}", f.name, f.node_id, f.state()))
                    .collect();
                why.push(format!("{name}: {steps:#?}\nits work: {work:#?}"));
            }
            panic!("not settled in 180 s: {open:?}\n{}", why.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(settled.len(), names.len());

    // Each order shipped and delivered what it kept, nothing waits.
    let mut shipped: BTreeMap<String, i64> = BTreeMap::new();
    for o in &settled {
        for l in &o.lines {
            let kept = l.quantity - l.quantity_cancelled;
            let want = if o.state() == OrderState::Delivered {
                (kept, kept, 0)
            } else {
                (l.quantity_shipped, l.quantity_shipped, 0)
            };
            assert_eq!(
                (
                    l.quantity_shipped,
                    l.quantity_delivered,
                    l.quantity_backordered
                ),
                want,
                "{} line {}",
                o.name,
                l.line_id
            );
            *shipped.entry(l.sku.clone()).or_default() += l.quantity_shipped;
        }
    }
    assert!(shipped.values().sum::<i64>() > 0, "something shipped");
    // Each step of an order is told once, whichever replica took it and
    // however often a crash made it come again.
    for o in &settled {
        let history = history_of(&mut orders.clone(), &o.name).await;
        let mut steps: BTreeMap<(OrderState, OrderState), usize> = BTreeMap::new();
        for c in history.iter().filter(|c| c.kind == "OrderStateChanged") {
            *steps.entry((c.from_state(), c.to_state())).or_default() += 1;
        }
        let final_steps = [OrderState::Shipped, OrderState::Delivered];
        for ((from, to), n) in steps {
            if final_steps.contains(&to) {
                assert_eq!(n, 1, "{}: {from:?} -> {to:?} told {n} times", o.name);
            }
        }
    }

    // Plans of cancelled orders that shipped nothing no longer count
    // against their nodes' capacity, whether the order recorded them or a
    // crash came first.
    for o in settled
        .iter()
        .filter(|o| o.state() == OrderState::Cancelled)
    {
        if o.lines.iter().all(|l| l.quantity_shipped == 0) {
            until_counted_plans(&suite, &o.name, 0).await;
        }
    }

    // No work left open at any warehouse.
    let mut work = FulfillmentServiceClient::new(suite.channel(Service::Fulfillment));
    let fos = work
        .list_fulfillment_orders(authed(
            T,
            ListFulfillmentOrdersRequest {
                page_size: 500,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .fulfillment_orders;
    for f in &fos {
        assert!(
            matches!(
                f.state(),
                FulfillmentState::Delivered
                    | FulfillmentState::Rejected
                    | FulfillmentState::Cancelled
            ),
            "{} of {} is {:?}",
            f.name,
            f.order,
            f.state()
        );
    }

    // The web channel's work went to its pool only (DC1 ranks first).
    let web: std::collections::HashSet<&String> = names
        .iter()
        .enumerate()
        .filter(|(i, _)| from_web(*i))
        .map(|(_, name)| name)
        .collect();
    let web_work: Vec<_> = fos.iter().filter(|f| web.contains(&f.order)).collect();
    assert!(!web_work.is_empty(), "no work of a web order");
    for f in web_work {
        assert!(
            WEB_POOL.contains(&f.node_id.as_str()),
            "{} of web order {} at {}",
            f.name,
            f.order,
            f.node_id
        );
    }

    // Inventory: nothing held, each shipped unit gone once, and the gate
    // agrees with the record.
    let mut stock = InventoryServiceClient::new(suite.channel(Service::Inventory));
    one_inventory_replica_left(&suite).await;
    let live = stock
        .list_reservations(authed(
            T,
            inv::ListReservationsRequest {
                states: vec![
                    inv::ReservationState::Active as i32,
                    inv::ReservationState::Confirmed as i32,
                ],
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .reservations;
    assert!(live.is_empty(), "live reservations left: {live:?}");
    let figures = stock
        .get_availability(authed(
            T,
            inv::GetAvailabilityRequest {
                skus: SKUS.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .availabilities;
    for a in &figures {
        let left = NODES.len() as i64 * STOCK - shipped.get(&a.sku).copied().unwrap_or(0);
        assert_eq!(
            (a.on_hand, a.reserved, a.available),
            (left, 0, left),
            "{}: (on hand, reserved, available)",
            a.sku
        );
    }
    let report = stock
        .reconcile(authed(
            T,
            inv::ReconcileRequest {
                request_id: "journeys-check".into(),
                dry_run: true,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let found = (
        report.drift_count,
        report.held_total_drift_count,
        report.reservation_drift_count,
    );
    assert_eq!(found, (0, 0, 0), "{report:?}");
}

/// Until the inventory replica running is the only one it knows: a crashed
/// one may have left gate changes it never recorded, and the gate is
/// rebuilt from the record once the live replica finds it silent.
async fn one_inventory_replica_left(suite: &Suite) {
    let mut db = suite.db.connect("inventory").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let replicas: i64 = sqlx::query_scalar("SELECT count(*) FROM gate_replicas")
            .fetch_one(&mut db)
            .await
            .unwrap();
        if replicas == 1 {
            return;
        }
        assert!(Instant::now() < deadline, "{replicas} inventory replicas");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
