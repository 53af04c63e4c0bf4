//! Routing: the sourcing engine in-process (decisions/s on one core, p50/p99
//! per decision) over synthetic networks of 10 to 1,000 nodes and orders of
//! 1 to 20 lines; the plans' cost against the exhaustive optimum on small
//! cases; and `PlanOrder` through gRPC (routing + inventory + Postgres) to
//! show what the service adds around the engine.
//!
//! Everything random is seeded, so two runs plan the same orders.
use crate::load::{self, Outcome};
use hdrhistogram::Histogram;
use oms_proto::common::{DeliveryMethod, GeoPoint, Money, NodeKind, PostalAddress, ServiceLevel};
use oms_proto::inventory::{self as inv, inventory_service_client::InventoryServiceClient};
use oms_proto::routing::{self as pb, routing_service_client::RoutingServiceClient};
use oms_routing::engine::{
    self,
    model::{Geo, Line, Network, NodeInfo, Order, Situation, Stock},
    rules::{self, RuleSet},
    solve,
};
use oms_runtime::Service;
use oms_testkit::{TestDb, authed};
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::hint::black_box;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// Milliseconds each in-process case runs.
    #[arg(long, default_value_t = 1000)]
    millis: u64,
    /// Small random cases compared with the exhaustive optimum.
    #[arg(long, default_value_t = 2000)]
    gap_cases: usize,
    /// Concurrent gRPC clients of the service measurement.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Seconds of each gRPC measurement; 0 skips the gRPC measurement.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Network sizes of the in-process cases.
    #[arg(long, value_delimiter = ',', default_values_t = NODES)]
    nodes: Vec<usize>,
    /// Order sizes (lines) of the in-process cases.
    #[arg(long, value_delimiter = ',', default_values_t = LINES)]
    lines: Vec<usize>,
}

const NODES: [usize; 4] = [10, 50, 200, 1000];
const LINES: [usize; 3] = [1, 5, 20];
/// SKUs the synthetic tenant sells.
const CATALOG: usize = 1000;
/// Orders cycled through per case.
const POOL: usize = 64;
const NOW: i64 = 1_795_428_000;
const TENANT: &str = "bench";

pub async fn run(args: Args) -> anyhow::Result<()> {
    let rules = rule_set();
    let compiled = rules::compile(&rules);
    let mut cases = Vec::new();
    for &n in &args.nodes {
        let world = World::new(n, 7 + n as u64);
        for &l in &args.lines {
            cases.push(case(&world, &compiled, l, args.millis));
        }
    }
    let gap = gap(&compiled, args.gap_cases);
    let grpc = if args.seconds > 0 {
        grpc(&args, &rules).await?
    } else {
        serde_json::Value::Null
    };
    println!(
        "{}",
        serde_json::json!({
            "scenario": "routing",
            "cases": cases,
            "gap": gap,
            "grpc": grpc,
        })
    );
    Ok(())
}

/// The rules measured: a single-shipment rule for fast service levels that
/// falls through to a split rule, both ranking on all six criteria.
fn rule_set() -> pb::RuleSet {
    use pb::{Criterion as C, SplitMode, UnfillableAction as U};
    let ranking = [
        (C::Distance, 1.0),
        (C::ShippingCost, 0.5),
        (C::NodePriority, 0.2),
        (C::CapacityHeadroom, 0.2),
        (C::PromiseDate, 1.0),
        (C::StockDepth, 0.1),
    ]
    .iter()
    .map(|(c, w)| pb::RankingCriterion {
        criterion: *c as i32,
        weight: *w,
    })
    .collect::<Vec<_>>();
    let rule = |id: &str, levels: Vec<i32>, mode: SplitMode, max: i32, then: U| pb::Rule {
        rule_id: id.into(),
        display_name: id.into(),
        order_filter: Some(pb::OrderFilter {
            service_levels: levels,
            ..Default::default()
        }),
        node_filter: Some(pb::NodeFilter {
            require_ship: true,
            ..Default::default()
        }),
        ranking: ranking.clone(),
        split_policy: Some(pb::SplitPolicy {
            mode: mode as i32,
            max_shipments: max,
            ..Default::default()
        }),
        when_unfillable: then as i32,
        ..Default::default()
    };
    let rs = pb::RuleSet {
        display_name: "bench".into(),
        rules: vec![
            rule(
                "fast-single",
                vec![ServiceLevel::Expedited as i32, ServiceLevel::NextDay as i32],
                SplitMode::NoSplit,
                0,
                U::NextRule,
            ),
            rule(
                "split",
                vec![],
                SplitMode::MaxShipments,
                4,
                U::PartialBackorder,
            ),
        ],
        ..Default::default()
    };
    let v = rules::validate(&rs, "rule_set");
    assert!(v.is_empty(), "the bench rules are valid: {v:?}");
    rs
}

/// A synthetic tenant: nodes spread over Europe, three in four warehouses,
/// and which of the catalog's SKUs each node holds.
struct World {
    net: Network,
    /// Units per (catalog SKU, node).
    units: Vec<i64>,
    seed: u64,
}

impl World {
    fn new(nodes: usize, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let infos: Vec<NodeInfo> = (0..nodes)
            .map(|i| {
                let store = i % 4 == 3;
                NodeInfo {
                    id: format!("N{i:04}"),
                    kind: if store {
                        NodeKind::Store
                    } else {
                        NodeKind::Warehouse
                    },
                    region: "EU".into(),
                    country: "DE".into(),
                    enabled: true,
                    ship: !store,
                    pickup: store,
                    ship_from_store: store && i % 8 == 3,
                    geo: Some(europe(&mut rng)),
                    priority: rng.random_range(0..=5),
                    daily_capacity: if rng.random_bool(0.5) {
                        0
                    } else {
                        rng.random_range(200..2000)
                    },
                    cutoff_minute: Some(rng.random_range(14 * 60..20 * 60)),
                    utc_offset_minutes: 60,
                }
            })
            .collect();
        let net = Network::new(infos);
        let mut units = vec![0; CATALOG * nodes];
        for sku in 0..CATALOG {
            for (n, node) in net.nodes.iter().enumerate() {
                let p = if node.kind == NodeKind::Store {
                    0.25
                } else {
                    0.5
                };
                if rng.random_bool(p) {
                    units[sku * nodes + n] = rng.random_range(1..=40);
                }
            }
        }
        World { net, units, seed }
    }

    fn units(&self, sku: usize, node: usize) -> i64 {
        self.units[sku * self.net.nodes.len() + node]
    }

    /// `count` orders of `lines` distinct SKUs, each with its stock matrix.
    fn orders(&self, lines: usize, count: usize) -> Vec<(Order, Vec<usize>, Stock)> {
        let mut rng = StdRng::seed_from_u64(self.seed ^ ((lines as u64) << 32));
        (0..count)
            .map(|i| {
                let mut catalog: Vec<usize> = Vec::with_capacity(lines);
                while catalog.len() < lines {
                    let k = rng.random_range(0..CATALOG);
                    if !catalog.contains(&k) {
                        catalog.push(k);
                    }
                }
                let order = order(&mut rng, i, &catalog);
                let mut stock = Stock::new(lines, self.net.nodes.len());
                for (k, sku) in catalog.iter().enumerate() {
                    for n in 0..self.net.nodes.len() {
                        stock.set(k, n, self.units(*sku, n));
                    }
                }
                (order, catalog, stock)
            })
            .collect()
    }
}

fn europe(rng: &mut StdRng) -> Geo {
    Geo {
        lat: rng.random_range(36.0..60.0),
        lon: rng.random_range(-9.0..25.0),
    }
}

fn order(rng: &mut StdRng, i: usize, catalog: &[usize]) -> Order {
    let level = match rng.random_range(0..10) {
        0..7 => ServiceLevel::Standard,
        7..9 => ServiceLevel::Expedited,
        _ => ServiceLevel::NextDay,
    };
    Order {
        name: format!("orders/b{i}"),
        lines: catalog
            .iter()
            .enumerate()
            .map(|(k, _)| Line {
                id: (k + 1).to_string(),
                sku: k,
                quantity: rng.random_range(1..=3),
                unit_price: 1999,
            })
            .collect(),
        skus: catalog.iter().map(|k| format!("SKU-{k:04}")).collect(),
        ship_to_geo: Some(europe(rng)),
        country: "DE".into(),
        region: "BE".into(),
        delivery: DeliveryMethod::Ship,
        pickup_node_id: String::new(),
        service_level: level,
        promise_epoch_s: rng
            .random_bool(0.5)
            .then(|| NOW + rng.random_range(2..6) * 86_400),
        channel: "channels/web".into(),
        priority: 0,
        currency: "EUR".into(),
    }
}

/// Decisions/s on this thread and latency per decision, for `f` called
/// over and over for `millis`.
fn measure(millis: u64, mut f: impl FnMut(usize)) -> serde_json::Value {
    let mut hist = Histogram::<u64>::new(3).expect("valid histogram bounds");
    let started = Instant::now();
    let deadline = started + Duration::from_millis(millis);
    let mut i = 0;
    loop {
        let t = Instant::now();
        f(i);
        let _ = hist.record(t.elapsed().as_nanos() as u64);
        i += 1;
        if i % 16 == 0 && Instant::now() >= deadline {
            break;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    serde_json::json!({
        "decisions_per_s": i as f64 / secs,
        "p50_us": hist.value_at_quantile(0.5) as f64 / 1000.0,
        "p99_us": hist.value_at_quantile(0.99) as f64 / 1000.0,
    })
}

/// One size: the engine alone, then the engine with the rendered
/// explanation (what `PlanOrder` stores and returns).
fn case(world: &World, rules: &RuleSet, lines: usize, millis: u64) -> serde_json::Value {
    let orders = world.orders(lines, POOL);
    let used = vec![0i64; world.net.nodes.len()];
    let situation = |stock| Situation {
        network: &world.net,
        stock,
        used_today: &used,
        penalties: &[],
        excluded: &[],
        pool: None,
        now_epoch_s: NOW,
    };
    let (mut shipments, mut short) = (0usize, 0usize);
    for (o, _, stock) in &orders {
        let p = engine::plan(rules, o, &situation(stock));
        shipments += p.shipments;
        short += usize::from(!p.backorders.is_empty());
    }
    let engine_only = measure(millis, |i| {
        let (o, _, stock) = &orders[i % POOL];
        black_box(engine::plan(rules, o, &situation(stock)));
    });
    let explained = measure(millis, |i| {
        let (o, _, stock) = &orders[i % POOL];
        let s = situation(stock);
        let p = engine::plan(rules, o, &s);
        black_box(engine::render::decision(&p, rules, "ruleSets/bench", o, &s));
    });
    serde_json::json!({
        "nodes": world.net.nodes.len(),
        "lines": lines,
        "engine": engine_only,
        "with_explanation": explained,
        "mean_shipments": shipments as f64 / POOL as f64,
        "short_share": short as f64 / POOL as f64,
    })
}

/// Small cases (6 to 9 nodes, 2 to 5 lines, sparse stock so that most
/// orders must split): each plan's (shipments, cost) against the optimum
/// found by enumeration over the same scored nodes.
fn gap(rules: &RuleSet, cases: usize) -> serde_json::Value {
    let mut rng = StdRng::seed_from_u64(42);
    let (mut compared, mut optimal, mut more_shipments, mut missed) = (0, 0, 0, 0);
    let (mut sum_gap, mut max_gap) = (0.0f64, 0.0f64);
    for c in 0..cases {
        let world = World::new(rng.random_range(6..10), 1000 + c as u64);
        let lines = rng.random_range(2..=5);
        let (o, _, stock) = world.orders(lines, 1).remove(0);
        let used = vec![0i64; world.net.nodes.len()];
        let s = Situation {
            network: &world.net,
            stock: &stock,
            used_today: &used,
            penalties: &[],
            excluded: &[],
            pool: None,
            now_epoch_s: NOW,
        };
        let p = engine::plan(rules, &o, &s);
        let Some(ri) = p.rule else { continue };
        let rule = &rules.rules[ri];
        let cands: Vec<usize> = p
            .candidates
            .iter()
            .filter(|c| c.reject.is_none())
            .map(|c| c.node)
            .collect();
        let score: Vec<f64> = p.candidates.iter().map(|c| c.score).collect();
        let need: Vec<i64> = o.lines.iter().map(|l| l.quantity).collect();
        let sku_of: Vec<usize> = o.lines.iter().map(|l| l.sku).collect();
        let problem = solve::Problem {
            need: &need,
            sku_of: &sku_of,
            skus: o.skus.len(),
            cands: &cands,
            score: &score,
            stock: &stock,
            penalties: &[],
            penalty: 0.0,
            max_shipments: rule.max_shipments,
            line_split: false,
        };
        let Some((k, best)) = solve::exhaustive(&problem) else {
            continue;
        };
        compared += 1;
        if !p.backorders.is_empty() {
            missed += 1;
        } else if p.shipments > k {
            more_shipments += 1;
        } else {
            // In score points: a node scores 0 (best on every criterion)
            // to the sum of the rule's weights (worst on every one).
            let g = p.cost - best;
            if g <= 1e-9 {
                optimal += 1;
            }
            sum_gap += g.max(0.0);
            max_gap = max_gap.max(g);
        }
    }
    let same = compared - missed - more_shipments;
    serde_json::json!({
        "cases": compared,
        "optimal": optimal,
        "more_shipments_than_optimum": more_shipments,
        "missed_a_full_plan": missed,
        "weights_sum": rules.rules.iter().map(|r| r.ranking.iter().map(|(_, w)| w).sum::<f64>()).fold(0.0, f64::max),
        "mean_cost_gap": if same > 0 { sum_gap / same as f64 } else { 0.0 },
        "max_cost_gap": max_gap,
    })
}

/// `PlanOrder` through gRPC on a 50-node network: one client (latency
/// against the engine's) and `args.clients` (throughput). Each decision is
/// stored; the count in Postgres must equal the calls that succeeded.
async fn grpc(args: &Args, rules: &pb::RuleSet) -> anyhow::Result<serde_json::Value> {
    const NODES: usize = 50;
    const SKUS: usize = 200;
    const LINES: usize = 5;
    let world = World::new(NODES, 7 + NODES as u64);
    let db = TestDb::new().await;
    let server_rt = load::ServerRuntime::new(4, "oms-services")?;
    let quiet = [
        ("OMS_LOG", "warn".to_string()),
        ("OMS_DATABASE_MAX_CONNECTIONS", "24".to_string()),
    ];
    let inventory = server_rt
        .spawn(oms_testkit::spawn(
            oms_testkit::config_with(Service::Inventory, &db, &[], &quiet),
            oms_inventory::run,
        ))
        .await?;
    let routing = server_rt
        .spawn(oms_testkit::spawn(
            oms_testkit::config_with(
                Service::Routing,
                &db,
                &[(Service::Inventory, inventory.addr)],
                &quiet,
            ),
            oms_routing::run,
        ))
        .await?;
    load_world(&world, SKUS, inventory.channel()).await?;
    let mut admin = RoutingServiceClient::new(routing.channel());
    let draft = admin
        .create_rule_set(authed(
            TENANT,
            pb::CreateRuleSetRequest {
                request_id: "bench-rules".into(),
                rule_set: Some(rules.clone()),
            },
        ))
        .await?
        .into_inner()
        .rule_set
        .unwrap_or_default();
    admin
        .activate_rule_set(authed(
            TENANT,
            pb::ActivateRuleSetRequest {
                request_id: "bench-activate".into(),
                name: draft.name,
            },
        ))
        .await?;

    // Orders over the SKUs loaded, as clients would send them.
    let mut rng = StdRng::seed_from_u64(99);
    let pool: Vec<pb::RoutingOrder> = (0..POOL)
        .map(|i| {
            let mut skus: Vec<usize> = Vec::new();
            while skus.len() < LINES {
                let k = rng.random_range(0..SKUS);
                if !skus.contains(&k) {
                    skus.push(k);
                }
            }
            to_proto(&order(&mut rng, i, &skus))
        })
        .collect();
    let token = format!("Bearer {}", oms_testkit::token(TENANT));
    let channel = routing.channel();
    let drive = |clients: usize| {
        let pool = pool.clone();
        let token = token.clone();
        let client = RoutingServiceClient::new(channel.clone());
        load::drive(clients, args.seconds, move |c| {
            let pool = pool.clone();
            let token = token.clone();
            let client = client.clone();
            move |n| {
                let mut client = client.clone();
                let mut order = pool[(c * 7 + n as usize) % POOL].clone();
                order.order = format!("orders/c{c}-{n}");
                let req = load::with_token(
                    pb::PlanOrderRequest {
                        request_id: format!("{clients}-{c}-{n}"),
                        order: Some(order),
                    },
                    &token,
                );
                async move {
                    match client.plan_order(req).await {
                        Ok(_) => Outcome::Ok,
                        Err(_) => Outcome::Failed,
                    }
                }
            }
        })
    };
    let one = drive(1).await;
    let many = drive(args.clients).await;
    let mut conn = db.connect("routing").await;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM decisions")
        .fetch_one(&mut conn)
        .await?;
    drop((routing, inventory));
    let ok = one.ok + many.ok;
    anyhow::ensure!(
        one.failed + many.failed == 0 && stored == ok as i64,
        "verification failed: {} failed calls, {stored} decisions stored for {ok} answers",
        one.failed + many.failed
    );
    Ok(serde_json::json!({
        "nodes": NODES,
        "lines": LINES,
        "one_client": {
            "decisions_per_s": one.ok as f64 / one.seconds,
            "p50_ms": one.ms(0.5),
            "p99_ms": one.ms(0.99),
        },
        "clients": args.clients,
        "many_clients": {
            "decisions_per_s": many.ok as f64 / many.seconds,
            "p50_ms": many.ms(0.5),
            "p99_ms": many.ms(0.99),
        },
        "decisions_stored": stored,
    }))
}

fn to_proto(o: &Order) -> pb::RoutingOrder {
    let geo = o.ship_to_geo.map(|g| GeoPoint {
        latitude: g.lat,
        longitude: g.lon,
    });
    pb::RoutingOrder {
        order: o.name.clone(),
        lines: o
            .lines
            .iter()
            .map(|l| pb::RoutingLine {
                line_id: l.id.clone(),
                sku: o.skus[l.sku].clone(),
                quantity: l.quantity,
                unit_price: Some(Money {
                    currency_code: o.currency.clone(),
                    amount_minor: l.unit_price,
                }),
            })
            .collect(),
        ship_to: Some(PostalAddress {
            country_code: o.country.clone(),
            region: o.region.clone(),
            geo,
            ..Default::default()
        }),
        delivery_method: o.delivery as i32,
        service_level: o.service_level as i32,
        promise_time: o.promise_epoch_s.map(|s| prost_types::Timestamp {
            seconds: s,
            nanos: 0,
        }),
        channel: o.channel.clone(),
        ..Default::default()
    }
}

/// The world's nodes, the first `skus` items and their stock, loaded into
/// inventory (stock by one snapshot import).
/// Snapshot rows per import call.
const IMPORT_ROWS: usize = 1000;

async fn load_world(
    world: &World,
    skus: usize,
    channel: tonic::transport::Channel,
) -> anyhow::Result<()> {
    let mut client = InventoryServiceClient::new(channel);
    for n in &world.net.nodes {
        let geo = n.geo.map(|g| GeoPoint {
            latitude: g.lat,
            longitude: g.lon,
        });
        client
            .create_node(authed(
                TENANT,
                inv::CreateNodeRequest {
                    request_id: format!("node-{}", n.id),
                    node: Some(inv::Node {
                        node_id: n.id.clone(),
                        kind: n.kind as i32,
                        enabled: true,
                        region: n.region.clone(),
                        priority: n.priority,
                        daily_capacity: n.daily_capacity,
                        capabilities: Some(inv::NodeCapabilities {
                            ship: n.ship,
                            pickup: n.pickup,
                            ship_from_store: n.ship_from_store,
                        }),
                        address: Some(PostalAddress {
                            country_code: n.country.clone(),
                            geo,
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                },
            ))
            .await?;
    }
    for k in 0..skus {
        client
            .create_item(authed(
                TENANT,
                inv::CreateItemRequest {
                    request_id: format!("item-{k}"),
                    item: Some(inv::Item {
                        sku: format!("SKU-{k:04}"),
                        ..Default::default()
                    }),
                },
            ))
            .await?;
    }
    use inv::import_stock_snapshot_request::Part;
    let rows: Vec<inv::SnapshotRow> = (0..skus)
        .flat_map(|k| {
            world
                .net
                .nodes
                .iter()
                .enumerate()
                .filter_map(move |(i, n)| {
                    let units = world.units(k, i);
                    (units > 0).then(|| inv::SnapshotRow {
                        node_id: n.id.clone(),
                        sku: format!("SKU-{k:04}"),
                        on_hand: units,
                        ..Default::default()
                    })
                })
        })
        .collect();
    // In parts, as a WMS sends a large snapshot: one call of 10,000 rows
    // outlasted the client's call timeout on a starved host.
    for (part, chunk) in rows.chunks(IMPORT_ROWS).enumerate() {
        let header = inv::ImportStockSnapshotRequest {
            part: Some(Part::Header(inv::SnapshotHeader {
                request_id: format!("bench-stock-{part}"),
                source: "bench".into(),
                count_time: None,
            })),
        };
        let msgs: Vec<_> = std::iter::once(header)
            .chain(chunk.iter().map(|r| inv::ImportStockSnapshotRequest {
                part: Some(Part::Row(r.clone())),
            }))
            .collect();
        let resp = client
            .import_stock_snapshot(authed(TENANT, futures::stream::iter(msgs)))
            .await?
            .into_inner();
        anyhow::ensure!(
            resp.rows_applied == chunk.len() as i64 && resp.errors.is_empty(),
            "stock import: {} of {} rows applied, errors {:?}",
            resp.rows_applied,
            chunk.len(),
            resp.errors
        );
    }
    Ok(())
}
