//! Plans over small networks, checked against what a planner would do by
//! hand.
use super::model::*;
use super::rules::{self, RuleSet};
use super::{plan, render};
use oms_proto::common::{DeliveryMethod, NodeKind, ServiceLevel};
use oms_proto::routing as pb;
use pb::{Criterion, PickupFallback, SplitMode, UnfillableAction};

fn node(id: &str, kind: NodeKind, lat: f64, lon: f64) -> NodeInfo {
    NodeInfo {
        id: id.into(),
        kind,
        region: "EU".into(),
        country: "DE".into(),
        enabled: true,
        ship: true,
        pickup: kind == NodeKind::Store,
        ship_from_store: false,
        geo: Some(Geo { lat, lon }),
        priority: 0,
        daily_capacity: 0,
        cutoff_minute: None,
        utc_offset_minutes: 0,
    }
}

/// Berlin, Hamburg, Munich warehouses and a Berlin store.
fn network() -> Network {
    Network::new(vec![
        node("DC-BER", NodeKind::Warehouse, 52.52, 13.40),
        node("DC-HAM", NodeKind::Warehouse, 53.55, 9.99),
        node("DC-MUC", NodeKind::Warehouse, 48.14, 11.58),
        node("STORE-BER", NodeKind::Store, 52.50, 13.42),
    ])
}

fn order(lines: &[(&str, i64)]) -> Order {
    let mut skus: Vec<String> = Vec::new();
    let lines = lines
        .iter()
        .enumerate()
        .map(|(i, (sku, q))| {
            let k = skus.iter().position(|s| s == sku).unwrap_or_else(|| {
                skus.push((*sku).to_owned());
                skus.len() - 1
            });
            Line {
                id: (i + 1).to_string(),
                sku: k,
                quantity: *q,
                unit_price: 1000,
            }
        })
        .collect();
    Order {
        name: "orders/o1".into(),
        lines,
        skus,
        // Potsdam, next to Berlin.
        ship_to_geo: Some(Geo {
            lat: 52.39,
            lon: 13.06,
        }),
        country: "DE".into(),
        region: "BB".into(),
        delivery: DeliveryMethod::Ship,
        pickup_node_id: String::new(),
        service_level: ServiceLevel::Standard,
        promise_epoch_s: None,
        channel: "channels/web".into(),
        priority: 0,
        currency: "EUR".into(),
    }
}

/// Stock per (sku, node id).
fn stock(net: &Network, o: &Order, rows: &[(&str, &str, i64)]) -> Stock {
    let mut s = Stock::new(o.skus.len(), net.nodes.len());
    for (sku, n, q) in rows {
        let k = o.skus.iter().position(|x| x == sku).unwrap();
        s.set(k, net.index_of(n).unwrap(), *q);
    }
    s
}

fn rule(id: &str) -> pb::Rule {
    pb::Rule {
        rule_id: id.into(),
        ranking: vec![pb::RankingCriterion {
            criterion: Criterion::Distance as i32,
            weight: 1.0,
        }],
        ..Default::default()
    }
}

/// A rule that ships the order from one node, and does `then` when it
/// cannot.
fn single_shipment(id: &str, then: UnfillableAction) -> pb::Rule {
    let mut r = rule(id);
    r.split_policy = Some(pb::SplitPolicy {
        mode: SplitMode::NoSplit as i32,
        ..Default::default()
    });
    r.when_unfillable = then as i32;
    r
}

fn compile(rules: Vec<pb::Rule>) -> RuleSet {
    let rs = pb::RuleSet {
        rules,
        ..Default::default()
    };
    let v = rules::validate(&rs, "rule_set");
    assert!(v.is_empty(), "{v:?}");
    rules::compile(&rs)
}

struct World {
    net: Network,
    stock: Stock,
    used: Vec<i64>,
    penalties: Vec<(usize, usize)>,
    excluded: Vec<usize>,
    pool: Option<Vec<bool>>,
}

impl World {
    fn new(o: &Order, rows: &[(&str, &str, i64)]) -> Self {
        let net = network();
        let stock = stock(&net, o, rows);
        let used = vec![0; net.nodes.len()];
        World {
            net,
            stock,
            used,
            penalties: vec![],
            excluded: vec![],
            pool: None,
        }
    }

    fn situation(&self) -> Situation<'_> {
        Situation {
            network: &self.net,
            stock: &self.stock,
            used_today: &self.used,
            penalties: &self.penalties,
            excluded: &self.excluded,
            pool: self.pool.as_deref(),
            now_epoch_s: 1_795_428_000,
        }
    }

    fn decide(&self, rs: &RuleSet, o: &Order) -> pb::Decision {
        let s = self.situation();
        render::decision(&plan(rs, o, &s), rs, "ruleSets/x", o, &s)
    }
}

fn placed(d: &pb::Decision) -> Vec<(String, String, i64)> {
    let mut v: Vec<_> = d
        .assignments
        .iter()
        .map(|a| (a.line_id.clone(), a.node_id.clone(), a.quantity))
        .collect();
    v.sort();
    v
}

fn candidate<'a>(d: &'a pb::Decision, id: &str) -> &'a pb::CandidateNode {
    d.explanation
        .as_ref()
        .unwrap()
        .candidates
        .iter()
        .find(|c| c.node_id == id)
        .unwrap()
}

#[test]
fn the_nearest_node_with_everything_ships_and_the_others_are_explained() {
    let o = order(&[("A", 2), ("B", 1)]);
    let w = World::new(
        &o,
        &[
            ("A", "DC-BER", 5),
            ("B", "DC-BER", 5),
            ("A", "DC-MUC", 9),
            ("B", "DC-MUC", 9),
            ("A", "STORE-BER", 9),
            ("B", "STORE-BER", 9),
        ],
    );
    let d = w.decide(&compile(vec![rule("r1")]), &o);
    assert_eq!(
        placed(&d),
        [
            ("1".into(), "DC-BER".into(), 2),
            ("2".into(), "DC-BER".into(), 1)
        ]
    );
    assert_eq!(d.shipments, 1);
    assert_eq!(d.rule_id, "r1");
    let ber = candidate(&d, "DC-BER");
    assert!(ber.chosen && !ber.rejected);
    assert_eq!(ber.breakdown[0].criterion, Criterion::Distance as i32);
    assert!(ber.breakdown[0].raw > 20.0 && ber.breakdown[0].raw < 40.0);
    let muc = candidate(&d, "DC-MUC");
    assert!(!muc.chosen && !muc.rejected && muc.score > ber.score);
    assert_eq!(
        candidate(&d, "DC-HAM").rejection_reason,
        "holds none of the ordered SKUs"
    );
    assert_eq!(
        candidate(&d, "STORE-BER").rejection_reason,
        "store without ship-from-store"
    );
    let summary = &d.explanation.as_ref().unwrap().summary;
    assert!(summary.contains("1 shipment from DC-BER"), "{summary}");
}

#[test]
fn a_rule_that_cannot_fill_falls_through_to_the_next() {
    let o = order(&[("A", 3)]);
    let w = World::new(&o, &[("A", "DC-BER", 1), ("A", "DC-HAM", 5)]);
    let mut near = rule("near");
    near.node_filter = Some(pb::NodeFilter {
        max_distance_km: 100.0,
        ..Default::default()
    });
    near.when_unfillable = UnfillableAction::NextRule as i32;
    let d = w.decide(&compile(vec![near, rule("anywhere")]), &o);
    assert_eq!(placed(&d), [("1".into(), "DC-HAM".into(), 3)]);
    let rules = &d.explanation.as_ref().unwrap().rules;
    assert_eq!(rules.len(), 2);
    assert!(
        rules[0].matched && rules[0].reason.contains("could not fill"),
        "{rules:?}"
    );
    assert_eq!(d.rule_id, "anywhere");
}

#[test]
fn order_filters_pick_the_rule() {
    let mut o = order(&[("A", 1)]);
    o.service_level = ServiceLevel::NextDay;
    let w = World::new(&o, &[("A", "DC-BER", 5), ("A", "DC-HAM", 5)]);
    let mut express = rule("express");
    express.order_filter = Some(pb::OrderFilter {
        service_levels: vec![ServiceLevel::SameDay as i32],
        ..Default::default()
    });
    let d = w.decide(&compile(vec![express, rule("rest")]), &o);
    let rules = &d.explanation.as_ref().unwrap().rules;
    assert!(!rules[0].matched);
    assert!(
        rules[0].reason.contains("SERVICE_LEVEL_NEXT_DAY"),
        "{rules:?}"
    );
    assert_eq!(d.rule_id, "rest");
}

#[test]
fn a_rule_without_a_minimum_priority_takes_orders_below_normal() {
    let mut o = order(&[("A", 1)]);
    o.priority = -5;
    let w = World::new(&o, &[("A", "DC-BER", 5)]);
    // Before 2026-12-03 an unset minimum read as 0: the built-in default
    // refused every order below normal priority, which then never routed.
    let d = w.decide(&rules::compile(&rules::builtin_default()), &o);
    assert_eq!(placed(&d), [("1".into(), "DC-BER".into(), 1)]);
    let mut normal = rule("normal-or-higher");
    normal.order_filter = Some(pb::OrderFilter {
        min_priority: Some(0),
        ..Default::default()
    });
    let d = w.decide(&compile(vec![normal, rule("rest")]), &o);
    let rules = &d.explanation.as_ref().unwrap().rules;
    assert!(
        rules[0]
            .reason
            .contains("priority -5 is below the rule's minimum 0"),
        "{rules:?}"
    );
    assert_eq!(d.rule_id, "rest");
}

#[test]
fn no_split_with_partial_backorder_ships_the_most_from_one_node() {
    let o = order(&[("A", 2), ("B", 2)]);
    let w = World::new(&o, &[("A", "DC-BER", 2), ("B", "DC-HAM", 2)]);
    let r = single_shipment("one", UnfillableAction::PartialBackorder);
    let d = w.decide(&compile(vec![r]), &o);
    assert_eq!(placed(&d), [("1".into(), "DC-BER".into(), 2)]);
    assert_eq!(d.backorders.len(), 1);
    assert_eq!(d.backorders[0].line_id, "2");
    assert!(
        d.backorders[0].reason.contains("does not split"),
        "{:?}",
        d.backorders
    );
}

#[test]
fn hold_means_no_assignments_and_says_why() {
    let o = order(&[("A", 9)]);
    let w = World::new(&o, &[("A", "DC-BER", 2)]);
    let mut r = rule("hold");
    r.when_unfillable = UnfillableAction::Hold as i32;
    let d = w.decide(&compile(vec![r]), &o);
    assert!(d.hold);
    assert!(d.assignments.is_empty());
    assert_eq!(d.backorders[0].quantity, 9);
    assert!(d.backorders[0].reason.contains("held"));
}

#[test]
fn nothing_feasible_gives_a_plan_that_says_why() {
    let o = order(&[("A", 1)]);
    let w = World::new(&o, &[]);
    let d = w.decide(&compile(vec![rule("r")]), &o);
    assert!(d.assignments.is_empty());
    assert_eq!(d.backorders[0].quantity, 1);
    assert!(
        d.backorders[0].reason.contains("hold 0 of A"),
        "{:?}",
        d.backorders[0]
    );
}

#[test]
fn ship_from_store_only_from_stores_that_enable_it() {
    let o = order(&[("A", 1)]);
    let mut w = World::new(&o, &[("A", "STORE-BER", 3), ("A", "DC-MUC", 3)]);
    let d = w.decide(&compile(vec![rule("r")]), &o);
    assert_eq!(placed(&d), [("1".into(), "DC-MUC".into(), 1)]);
    let s = w.net.index_of("STORE-BER").unwrap();
    w.net.nodes[s].ship_from_store = true;
    let d = w.decide(&compile(vec![rule("r")]), &o);
    assert_eq!(placed(&d), [("1".into(), "STORE-BER".into(), 1)]);
}

#[test]
fn pickup_sources_from_the_store_then_transfers_or_fails() {
    let mut o = order(&[("A", 1), ("B", 1)]);
    o.delivery = DeliveryMethod::Pickup;
    o.pickup_node_id = "STORE-BER".into();
    o.ship_to_geo = None;
    // The store has both: collected there.
    let w = World::new(
        &o,
        &[
            ("A", "STORE-BER", 1),
            ("B", "STORE-BER", 1),
            ("B", "DC-BER", 5),
        ],
    );
    let d = w.decide(&compile(vec![rule("r")]), &o);
    assert_eq!(
        placed(&d),
        [
            ("1".into(), "STORE-BER".into(), 1),
            ("2".into(), "STORE-BER".into(), 1)
        ]
    );
    // The store lacks B: B comes from the nearest DC to the store.
    let w = World::new(
        &o,
        &[
            ("A", "STORE-BER", 1),
            ("B", "DC-BER", 5),
            ("B", "DC-MUC", 5),
        ],
    );
    let d = w.decide(&compile(vec![rule("r")]), &o);
    assert_eq!(
        placed(&d),
        [
            ("1".into(), "STORE-BER".into(), 1),
            ("2".into(), "DC-BER".into(), 1)
        ]
    );
    let transfer = d.assignments.iter().find(|a| a.line_id == "2").unwrap();
    assert_eq!(transfer.transfer_to_node_id, "STORE-BER");
    assert_eq!(d.shipments, 2);
    // A rule that does not transfer fails clearly.
    let mut strict = rule("strict");
    strict.pickup_fallback = PickupFallback::Fail as i32;
    let d = w.decide(&compile(vec![strict]), &o);
    assert!(d.assignments.is_empty());
    assert!(
        d.backorders[0].reason.contains("does not transfer"),
        "{:?}",
        d.backorders
    );
    // An unknown store is named.
    o.pickup_node_id = "STORE-NOPE".into();
    let d = w.decide(&compile(vec![rule("r")]), &o);
    assert!(d.backorders[0].reason.contains("STORE-NOPE"));
}

#[test]
fn a_failed_node_is_excluded_and_a_penalised_one_loses_its_standing() {
    let o = order(&[("A", 1)]);
    let mut w = World::new(
        &o,
        &[("A", "DC-BER", 5), ("A", "DC-HAM", 5), ("A", "DC-MUC", 5)],
    );
    let ber = w.net.index_of("DC-BER").unwrap();
    let ham = w.net.index_of("DC-HAM").unwrap();
    w.excluded = vec![ber];
    let d = w.decide(&compile(vec![rule("r")]), &o);
    assert_eq!(placed(&d), [("1".into(), "DC-HAM".into(), 1)]);
    w.penalties = vec![(ham, 0)];
    let d = w.decide(&compile(vec![rule("r")]), &o);
    assert_eq!(placed(&d), [("1".into(), "DC-MUC".into(), 1)]);
    assert_eq!(candidate(&d, "DC-HAM").penalized_skus, ["A"]);
    assert_eq!(
        candidate(&d, "DC-BER").rejection_reason,
        "excluded (by the rule, or it just failed this order)"
    );
}

#[test]
fn a_channel_pool_keeps_the_order_to_its_nodes_and_says_why() {
    let o = order(&[("A", 1)]);
    let rows = [
        ("A", "DC-BER", 5),
        ("A", "DC-MUC", 5),
        ("A", "STORE-BER", 5),
    ];
    let mut w = World::new(&o, &rows);
    let pools = |web: &[&str]| {
        network().with_pools([
            (
                "channels/web".to_string(),
                web.iter().map(|n| n.to_string()).collect(),
            ),
            ("channels/other".to_string(), vec!["DC-BER".to_string()]),
        ])
    };
    w.net = pools(&["DC-MUC", "STORE-BER"]);
    w.pool = w.net.pool(&o.channel).map(<[bool]>::to_vec);
    let d = w.decide(&compile(vec![rule("r")]), &o);
    assert_eq!(placed(&d), [("1".into(), "DC-MUC".into(), 1)]);
    let outside = "not in the pool of nodes of the order's channel";
    assert_eq!(candidate(&d, "DC-BER").rejection_reason, outside);

    // A pickup at a store outside the pool: the store gives none of its
    // own stock, a node of the pool sends the units there.
    let mut pickup = o.clone();
    pickup.delivery = DeliveryMethod::Pickup;
    pickup.pickup_node_id = "STORE-BER".into();
    pickup.ship_to_geo = None;
    w.net = pools(&["DC-MUC"]);
    w.pool = w.net.pool(&o.channel).map(<[bool]>::to_vec);
    let d = w.decide(&compile(vec![rule("r")]), &pickup);
    assert_eq!(placed(&d), [("1".into(), "DC-MUC".into(), 1)]);
    assert_eq!(d.assignments[0].transfer_to_node_id, "STORE-BER");
    assert_eq!(candidate(&d, "STORE-BER").rejection_reason, outside);

    // A channel without a pool (or with an empty one) takes every node.
    assert_eq!(w.net.pool("channels/none"), None);
    assert_eq!(
        network()
            .with_pools([("channels/web".to_string(), vec![])])
            .pool("channels/web"),
        None
    );
}

#[test]
fn the_promise_date_prefers_a_node_before_its_cut_off() {
    let mut o = order(&[("A", 1)]);
    o.service_level = ServiceLevel::NextDay;
    // Promised for tomorrow; it is 10:00 UTC.
    o.promise_epoch_s = Some(1_795_428_000 + 86_400);
    let mut w = World::new(&o, &[("A", "DC-BER", 5), ("A", "DC-HAM", 5)]);
    let ber = w.net.index_of("DC-BER").unwrap();
    w.net.nodes[ber].cutoff_minute = Some(9 * 60);
    let mut r = rule("promise");
    r.ranking = vec![
        pb::RankingCriterion {
            criterion: Criterion::PromiseDate as i32,
            weight: 10.0,
        },
        pb::RankingCriterion {
            criterion: Criterion::Distance as i32,
            weight: 1.0,
        },
    ];
    let d = w.decide(&compile(vec![r]), &o);
    assert_eq!(placed(&d), [("1".into(), "DC-HAM".into(), 1)]);
    assert_eq!(candidate(&d, "DC-BER").breakdown[0].raw, 1.0);
}

#[test]
fn a_shipment_below_the_minimum_value_is_not_made() {
    let o = order(&[("A", 1), ("B", 1)]);
    let w = World::new(&o, &[("A", "DC-BER", 1), ("B", "DC-HAM", 1)]);
    let mut r = rule("min");
    r.split_policy = Some(pb::SplitPolicy {
        mode: SplitMode::MaxShipments as i32,
        max_shipments: 3,
        allow_line_split: false,
        min_shipment_value: Some(oms_proto::common::Money {
            currency_code: "EUR".into(),
            amount_minor: 1500,
        }),
    });
    r.when_unfillable = UnfillableAction::PartialBackorder as i32;
    let d = w.decide(&compile(vec![r]), &o);
    assert!(d.assignments.is_empty(), "{:?}", d.assignments);
    assert!(d.backorders[0].reason.contains("below the rule's minimum"));
}

#[test]
fn capacity_used_up_removes_a_node() {
    let o = order(&[("A", 1)]);
    let mut w = World::new(&o, &[("A", "DC-BER", 5), ("A", "DC-HAM", 5)]);
    let ber = w.net.index_of("DC-BER").unwrap();
    w.net.nodes[ber].daily_capacity = 10;
    w.used[ber] = 10;
    let d = w.decide(&compile(vec![rule("r")]), &o);
    assert_eq!(placed(&d), [("1".into(), "DC-HAM".into(), 1)]);
    assert_eq!(
        candidate(&d, "DC-BER").rejection_reason,
        "daily capacity of 10 orders used up"
    );
}

/// A summary of units left unplaced says where the stock is when the
/// nodes holding it were set aside (it said only "eligible nodes hold 0",
/// which read as out of stock).
#[test]
fn a_shortfall_names_the_nodes_set_aside_that_hold_the_sku() {
    let o = order(&[("A", 2)]);
    let mut w = World::new(&o, &[("A", "DC-BER", 5), ("A", "DC-HAM", 1)]);
    let ber = w.net.index_of("DC-BER").unwrap();
    w.net.nodes[ber].daily_capacity = 1;
    w.used[ber] = 1;
    let mut r = rule("r");
    r.when_unfillable = UnfillableAction::PartialBackorder as i32;
    let d = w.decide(&compile(vec![r]), &o);
    assert!(d.assignments.is_empty(), "{:?}", d.assignments);
    assert_eq!(
        d.backorders[0].reason,
        "eligible nodes hold 1 of A in all, 2 wanted; \
         set aside: DC-BER with 5 (daily capacity of 1 order used up)"
    );
}

/// Each backordered line says why it is short; the decision's summary is
/// the first short line's (every line said "of A" before).
#[test]
fn each_backordered_line_names_its_own_sku() {
    let o = order(&[("A", 3), ("B", 2), ("C", 1), ("D", 4)]);
    let w = World::new(
        &o,
        &[
            ("A", "DC-BER", 1),
            ("C", "DC-BER", 1),
            ("D", "DC-HAM", 2),
            ("D", "DC-MUC", 2),
        ],
    );
    let reasons = |d: &pb::Decision| -> Vec<String> {
        d.backorders.iter().map(|b| b.reason.clone()).collect()
    };
    let mut partial = rule("partial");
    partial.when_unfillable = UnfillableAction::PartialBackorder as i32;
    let d = w.decide(&compile(vec![partial]), &o);
    assert_eq!(
        reasons(&d),
        [
            "eligible nodes hold 1 of A in all, 3 wanted",
            "eligible nodes hold 0 of B in all, 2 wanted",
            "no eligible node holds 4 of D (most at one node: 2) and the rule does not split lines",
        ]
    );
    let summary = d.explanation.unwrap().summary;
    assert!(summary.contains("hold 1 of A"), "{summary}");

    let mut hold = rule("hold");
    hold.when_unfillable = UnfillableAction::Hold as i32;
    let d = w.decide(&compile(vec![hold]), &o);
    let said = reasons(&d);
    assert_eq!(said[1], "held: eligible nodes hold 0 of B in all, 2 wanted");
    assert_eq!(
        said[2], "held: eligible nodes hold 1 of A in all, 3 wanted",
        "C could ship: the order's reason"
    );

    let d = w.decide(&compile(vec![rule("next")]), &o);
    assert_eq!(
        reasons(&d)[3],
        "no rule could fill the order; the last said: no eligible node holds 4 of D \
         (most at one node: 2) and the rule does not split lines"
    );
}

#[test]
fn a_single_shipment_rule_that_falls_through_measures_only_whole_nodes() {
    let o = order(&[("A", 2), ("B", 2)]);
    let w = World::new(
        &o,
        &[("A", "DC-BER", 2), ("A", "DC-MUC", 2), ("B", "DC-MUC", 2)],
    );
    let one = single_shipment("one", UnfillableAction::NextRule);
    let d = w.decide(&compile(vec![one, rule("split")]), &o);
    assert_eq!(d.rule_id, "one", "Munich holds everything");
    assert_eq!(
        placed(&d),
        [
            ("1".into(), "DC-MUC".into(), 2),
            ("2".into(), "DC-MUC".into(), 2)
        ]
    );
    let ber = d
        .explanation
        .unwrap()
        .candidates
        .into_iter()
        .find(|c| c.node_id == "DC-BER")
        .unwrap();
    assert!(ber.rejected);
    assert_eq!(
        ber.rejection_reason,
        "cannot ship the whole order, and the rule ships it in one"
    );
}

#[test]
fn a_single_shipment_rule_no_node_can_fill_says_so_and_still_explains_its_nodes() {
    // No node that ships holds both SKUs (the store does, but it does not
    // ship parcels).
    let o = order(&[("A", 2), ("B", 2)]);
    let w = World::new(
        &o,
        &[
            ("A", "DC-BER", 2),
            ("B", "DC-MUC", 2),
            ("A", "STORE-BER", 5),
            ("B", "STORE-BER", 5),
        ],
    );
    let one = single_shipment("one", UnfillableAction::NextRule);
    // Followed by a rule that splits: it takes the order.
    let d = w.decide(&compile(vec![one.clone(), rule("split")]), &o);
    assert_eq!(d.rule_id, "split");
    assert_eq!(d.shipments, 2);
    let rules = &d.explanation.as_ref().unwrap().rules;
    assert!(
        rules[0].matched
            && rules[0]
                .reason
                .contains("no node that ships holds the whole order"),
        "{rules:?}"
    );
    // Alone, it is the last rule tried: its nodes explain the plan, each
    // with its own reason, and every unit is backordered saying why.
    let d = w.decide(&compile(vec![one]), &o);
    assert!(d.assignments.is_empty());
    assert_eq!(d.backorders.len(), 2);
    assert!(
        d.backorders[0]
            .reason
            .contains("no node that ships holds the whole order"),
        "{:?}",
        d.backorders
    );
    for id in ["DC-BER", "DC-MUC"] {
        assert_eq!(
            candidate(&d, id).rejection_reason,
            "cannot ship the whole order, and the rule ships it in one"
        );
    }
    assert_eq!(
        candidate(&d, "DC-HAM").rejection_reason,
        "holds none of the ordered SKUs"
    );
    assert_eq!(
        candidate(&d, "STORE-BER").rejection_reason,
        "store without ship-from-store"
    );
}

#[test]
fn stock_beyond_32_bits_counts_as_the_most_a_node_can_hold() {
    // Stock is kept in 32-bit counts (vector code): more than that at a
    // node is still "plenty", and a line beyond it is still short.
    let o = order(&[("A", 5), ("B", 3_000_000_000)]);
    let net = network();
    let s = stock(
        &net,
        &o,
        &[("A", "DC-BER", 10_000_000_000), ("B", "DC-BER", -4)],
    );
    assert_eq!(s.get(0, net.index_of("DC-BER").unwrap()), Stock::MAX);
    assert_eq!(s.get(1, net.index_of("DC-BER").unwrap()), 0);
    let o = order(&[("A", 5)]);
    let w = World::new(&o, &[("A", "DC-BER", 10_000_000_000)]);
    let d = w.decide(&compile(vec![rule("r1")]), &o);
    assert_eq!(placed(&d), [("1".into(), "DC-BER".into(), 5)]);
    let big = order(&[("A", 3_000_000_000)]);
    let w = World::new(&big, &[("A", "DC-BER", 10_000_000_000)]);
    let d = w.decide(&compile(vec![rule("r1")]), &big);
    assert!(placed(&d).is_empty(), "{:?}", placed(&d));
    assert_eq!(d.backorders.len(), 1);
}
