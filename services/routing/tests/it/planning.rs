//! Plans on live availability, stored decisions, simulations, reroutes.
use crate::rule_sets::{rule, rule_set};
use crate::{TENANT, at, node, order, placed, rid, start};
use futures::StreamExt;
use oms_proto::common::DeliveryMethod;
use oms_proto::common::NodeKind;
use oms_proto::routing::{
    ActivateRuleSetRequest, CreateRuleSetRequest, Criterion, DecisionKind, GetDecisionRequest,
    ListDecisionsRequest, NodeFilter, PlanOrderRequest, ReleaseDecisionRequest,
    RerouteOrderRequest, RerouteReason, SimulateRoutingRequest, StockOverride,
    WatchRoutingEventsRequest, watch_routing_events_response::Kind,
};
use oms_runtime::status;
use oms_testkit::authed;
use tonic::Code;

#[tokio::test]
async fn plans_on_live_stock_store_the_decision_and_replay_it() {
    let mut h = start().await;
    h.network(&[
        ("DC-BER", "MUG", 1),
        ("DC-MUC", "MUG", 10),
        ("DC-BER", "TEA", 5),
    ])
    .await;
    let o = order("o-1", &[("MUG", 2), ("TEA", 1)]);
    let rid1 = rid();
    let d = h.plan(&rid1, o.clone()).await;
    // TEA is only in Berlin, MUG x2 only in Munich: two shipments.
    assert_eq!(placed(&d), [at("1", "DC-MUC", 2), at("2", "DC-BER", 1)]);
    assert_eq!(d.shipments, 2);
    assert_eq!(d.kind(), DecisionKind::Plan);
    assert_eq!(d.rule_set, "ruleSets/builtin-default");
    let ex = d.explanation.clone().unwrap();
    let store = ex
        .candidates
        .iter()
        .find(|c| c.node_id == "STORE-BER")
        .unwrap();
    assert!(store.rejected);
    assert!(
        ex.summary.contains("2 shipments from DC-BER, DC-MUC"),
        "{}",
        ex.summary
    );

    // A replay answers the same decision.
    let again = h.plan(&rid1, o).await;
    assert_eq!(again.name, d.name);
    let got = h
        .client
        .get_decision(authed(
            TENANT,
            GetDecisionRequest {
                name: d.name.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .decision
        .unwrap();
    assert_eq!(got, d);
    let list = h
        .client
        .list_decisions(authed(
            TENANT,
            ListDecisionsRequest {
                order: "orders/o-1".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.decisions.len(), 1);
    // Another tenant cannot read it.
    let err = h
        .client
        .get_decision(authed(
            "globex",
            GetDecisionRequest {
                name: d.name.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // The feed carries it.
    let mut feed = h
        .client
        .watch_routing_events(authed(TENANT, WatchRoutingEventsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let ev = feed.next().await.unwrap().unwrap();
    match ev.kind {
        Some(Kind::OrderRouted(r)) => assert_eq!(r.decision.unwrap().name, d.name),
        other => panic!("unexpected {other:?}"),
    }
}

/// A warehouse created since routing last read the network (it keeps it
/// 5 s) is planned with at once: inventory names it with its stock, and
/// routing reads the network again instead of planning without it.
#[tokio::test]
async fn a_node_created_since_the_network_was_read_is_planned_with() {
    let mut h = start().await;
    h.network(&[("DC-BER", "MUG", 1)]).await;
    let first = h.plan(&rid(), order("o-1", &[("MUG", 1)])).await;
    assert_eq!(placed(&first), [at("1", "DC-BER", 1)]);
    h.create_nodes([node("DC-HAM", NodeKind::Warehouse, 53.55, 9.99)])
        .await;
    h.create_items(&["TEA"]).await;
    h.receive("DC-HAM", "TEA", 2).await;
    let d = h.plan(&rid(), order("o-2", &[("TEA", 1)])).await;
    assert_eq!(placed(&d), [at("1", "DC-HAM", 1)], "{:?}", d.explanation);
}

#[tokio::test]
async fn bad_orders_get_field_violations_and_short_stock_a_plan_that_says_why() {
    let mut h = start().await;
    h.network(&[("DC-BER", "MUG", 1)]).await;
    // The fields a plan of `o` is refused on (with `request_id`, or none).
    let mut refused = async |request_id: String, o: oms_proto::routing::RoutingOrder| {
        let req = PlanOrderRequest {
            request_id,
            order: Some(o),
        };
        let err = h.client.plan_order(authed(TENANT, req)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        status::fields(&err)
    };
    let mut o = order("o-2", &[("MUG", 0)]);
    o.delivery_method = DeliveryMethod::Pickup as i32;
    assert_eq!(
        refused(rid(), o).await,
        ["order.pickup_node_id", "order.lines[0].quantity"]
    );
    // Without a request id, that comes back with the rest.
    assert_eq!(
        refused(String::new(), order("o-2", &[("MUG", 0)])).await,
        ["request_id", "order.lines[0].quantity"]
    );
    // Beyond any order (the engine's sums overflowed and the call died).
    let huge = order("o-2", &[("MUG", i64::MAX), ("MUG", i64::MAX)]);
    assert_eq!(
        refused(rid(), huge).await,
        ["order.lines[0].quantity", "order.lines[1].quantity"]
    );
    // A SKU no item can have (inventory refused it, and the plan answered
    // UNAVAILABLE: retried for ever), a node id no node can have.
    let odd_sku = order("o-2", &[("MUG", 1), ("a b", 1)]);
    assert_eq!(refused(rid(), odd_sku).await, ["order.lines[1].sku"]);
    let mut odd_store = order("o-2", &[("MUG", 1)]);
    odd_store.delivery_method = DeliveryMethod::Pickup as i32;
    odd_store.pickup_node_id = "ST 1".into();
    assert_eq!(refused(rid(), odd_store).await, ["order.pickup_node_id"]);
    // A ship-to as orders would refuse it: "de" matched no rule's "DE".
    let mut odd_address = order("o-2", &[("MUG", 1)]);
    odd_address.lines[0].line_id = "L".repeat(65);
    let to = odd_address.ship_to.get_or_insert_default();
    to.country_code = "de".into();
    to.city = "x".repeat(501);
    assert_eq!(
        refused(rid(), odd_address).await,
        [
            "order.ship_to.city",
            "order.ship_to.country_code",
            "order.lines[0].line_id"
        ]
    );
    let err = h
        .client
        .release_decision(authed(
            TENANT,
            ReleaseDecisionRequest {
                name: "decisions/x".into(),
                reason: "x".repeat(501),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status::fields(&err), ["request_id", "name", "reason"]);
    let d = h.plan(&rid(), order("o-3", &[("MUG", 3)])).await;
    assert!(d.assignments.is_empty());
    assert_eq!(d.backorders[0].quantity, 3);
    assert!(
        d.backorders[0].reason.contains("hold 1 of MUG"),
        "{:?}",
        d.backorders
    );
}

#[tokio::test]
async fn a_draft_is_simulated_against_the_live_rules_before_it_goes_live() {
    let mut h = start().await;
    h.network(&[("DC-BER", "MUG", 5), ("DC-MUC", "MUG", 5)])
        .await;
    // Past orders to replay.
    for i in 0..3 {
        h.plan(&rid(), order(&format!("past-{i}"), &[("MUG", 1)]))
            .await;
    }
    // A draft that never uses Berlin.
    let mut no_berlin = rule("no-berlin", Criterion::Distance);
    no_berlin.node_filter = Some(NodeFilter {
        exclude_node_ids: vec!["DC-BER".into()],
        ..Default::default()
    });
    let draft = h
        .client
        .create_rule_set(authed(
            TENANT,
            CreateRuleSetRequest {
                request_id: rid(),
                rule_set: Some(rule_set("draft", vec![no_berlin])),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .rule_set
        .unwrap();
    let sim = h
        .client
        .simulate_routing(authed(
            TENANT,
            SimulateRoutingRequest {
                rule_set: draft.name.clone(),
                orders: vec![order("new-1", &[("MUG", 2)])],
                past_decisions: 10,
                stock_overrides: vec![],
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sim.results.len(), 4);
    assert_eq!(sim.changed_count, 4);
    for r in &sim.results {
        let s = r.simulated.as_ref().unwrap();
        let l = r.live.as_ref().unwrap();
        assert_eq!(s.assignments[0].node_id, "DC-MUC");
        assert_eq!(l.assignments[0].node_id, "DC-BER");
        assert_eq!(s.kind(), DecisionKind::Simulation);
    }
    // Hypothetical stock: Berlin empty, the live rules go to Munich too.
    let sim = h
        .client
        .simulate_routing(authed(
            TENANT,
            SimulateRoutingRequest {
                rule_set: String::new(),
                orders: vec![order("new-2", &[("MUG", 2)])],
                past_decisions: 0,
                stock_overrides: vec![StockOverride {
                    node_id: "DC-BER".into(),
                    sku: "MUG".into(),
                    available: 0,
                }],
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sim.changed_count, 1);
    assert_eq!(
        sim.results[0].simulated.as_ref().unwrap().assignments[0].node_id,
        "DC-MUC"
    );
    // Simulations store nothing.
    let list = h
        .client
        .list_decisions(authed(TENANT, ListDecisionsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.decisions.len(), 3);
    // Overrides that would apply to nothing, or twice, are refused rather
    // than answered "no change".
    let over = |node: &str, sku: &str| StockOverride {
        node_id: node.into(),
        sku: sku.into(),
        available: 1,
    };
    let mut simulate = async |overrides: Vec<StockOverride>| {
        let req = SimulateRoutingRequest {
            orders: vec![order("new-2", &[("MUG", 2)])],
            stock_overrides: overrides,
            ..Default::default()
        };
        let err = h.client.simulate_routing(authed(TENANT, req)).await;
        status::fields(&err.unwrap_err())
    };
    let twice = vec![over("DC-BER", "MUG"), over("DC-BER", "MUG")];
    assert_eq!(simulate(twice).await, ["stock_overrides[1]"]);
    let to_nothing = vec![over("DC-NOPE", "MUG"), over("DC-MUC", "CUP")];
    assert_eq!(
        simulate(to_nothing).await,
        ["stock_overrides[0].node_id", "stock_overrides[1].sku"]
    );
    // A simulation of nothing is refused rather than answered "no change".
    let err = h
        .client
        .simulate_routing(authed(TENANT, SimulateRoutingRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(status::fields(&err), ["orders"]);

    // Once live, plans follow it and name it.
    h.client
        .activate_rule_set(authed(
            TENANT,
            ActivateRuleSetRequest {
                request_id: rid(),
                name: draft.name.clone(),
            },
        ))
        .await
        .unwrap();
    let d = h.plan(&rid(), order("o-live", &[("MUG", 1)])).await;
    assert_eq!(placed(&d), [at("1", "DC-MUC", 1)]);
    assert_eq!(d.rule_set, draft.name);
    assert_eq!(d.rule_id, "no-berlin");

    // The live rule set and the built-in default by name: the default
    // still ships from Berlin, the live one no longer.
    let mut simulate = async |rule_set: &str| {
        let req = SimulateRoutingRequest {
            rule_set: rule_set.into(),
            orders: vec![order("new-3", &[("MUG", 1)])],
            ..Default::default()
        };
        h.client.simulate_routing(authed(TENANT, req)).await
    };
    let sim = simulate("ruleSets/active").await.unwrap().into_inner();
    assert_eq!(sim.changed_count, 0);
    let sim = simulate("ruleSets/builtin-default")
        .await
        .unwrap()
        .into_inner();
    let simulated = sim.results[0].simulated.as_ref().unwrap();
    assert_eq!(simulated.rule_set, "ruleSets/builtin-default");
    assert_eq!(simulated.assignments[0].node_id, "DC-BER");
    assert_eq!(sim.changed_count, 1);
    let err = simulate("ruleSets/draft").await.unwrap_err();
    assert_eq!(status::fields(&err), ["rule_set"]);
    assert_eq!(
        err.message(),
        "1 invalid field(s): rule_set: \"ruleSets/draft\" is not a rule set name (`ruleSets/{uuid}`, `ruleSets/active` or `ruleSets/builtin-default`)"
    );
}

#[tokio::test]
async fn a_reroute_avoids_the_failed_node_and_lowers_its_standing() {
    let mut h = start().await;
    h.network(&[("DC-BER", "MUG", 5), ("DC-MUC", "MUG", 5)])
        .await;
    let d = h.plan(&rid(), order("o-r", &[("MUG", 2)])).await;
    assert_eq!(placed(&d), [at("1", "DC-BER", 2)]);
    let request = RerouteOrderRequest {
        request_id: rid(),
        order: Some(order("o-r", &[("MUG", 2)])),
        failed_node_id: "DC-BER".into(),
        reason: RerouteReason::Rejected as i32,
        penalty: None,
    };
    let r = h
        .client
        .reroute_order(authed(TENANT, request.clone()))
        .await
        .unwrap()
        .into_inner()
        .decision
        .unwrap();
    assert_eq!(r.kind(), DecisionKind::Reroute);
    assert_eq!(placed(&r), [at("1", "DC-MUC", 2)]);
    // A replay changes nothing.
    let again = h
        .client
        .reroute_order(authed(TENANT, request))
        .await
        .unwrap()
        .into_inner()
        .decision
        .unwrap();
    assert_eq!(again.name, r.name);
    // For the next hour Berlin ranks below Munich for MUG.
    let next = h.plan(&rid(), order("o-next", &[("MUG", 1)])).await;
    assert_eq!(placed(&next), [at("1", "DC-MUC", 1)]);
    let ber = next
        .explanation
        .unwrap()
        .candidates
        .into_iter()
        .find(|c| c.node_id == "DC-BER")
        .unwrap();
    assert_eq!(ber.penalized_skus, ["MUG"]);
    assert!(!ber.rejected);
    // The order's decisions, newest first.
    let list = h
        .client
        .list_decisions(authed(
            TENANT,
            ListDecisionsRequest {
                order: "orders/o-r".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let kinds: Vec<DecisionKind> = list.decisions.iter().map(|d| d.kind()).collect();
    assert_eq!(kinds, [DecisionKind::Reroute, DecisionKind::Plan]);
}

#[tokio::test]
async fn click_and_collect_uses_the_store_or_transfers_to_it() {
    let mut h = start().await;
    h.network(&[
        ("STORE-BER", "MUG", 1),
        ("DC-MUC", "MUG", 5),
        ("DC-MUC", "TEA", 5),
    ])
    .await;
    let mut o = order("o-p", &[("MUG", 1)]);
    o.delivery_method = DeliveryMethod::Pickup as i32;
    o.pickup_node_id = "STORE-BER".into();
    let d = h.plan(&rid(), o.clone()).await;
    assert_eq!(placed(&d), [at("1", "STORE-BER", 1)]);
    assert!(d.assignments[0].transfer_to_node_id.is_empty());
    o.order = "orders/o-p2".into();
    o.lines[0].quantity = 1;
    o.lines.push(oms_proto::routing::RoutingLine {
        line_id: "2".into(),
        sku: "TEA".into(),
        quantity: 2,
        unit_price: None,
    });
    let d = h.plan(&rid(), o).await;
    assert_eq!(placed(&d), [at("1", "STORE-BER", 1), at("2", "DC-MUC", 2)]);
    let tea = d.assignments.iter().find(|a| a.line_id == "2").unwrap();
    assert_eq!(tea.transfer_to_node_id, "STORE-BER");
}

#[tokio::test]
async fn a_released_decision_gives_its_node_capacity_back() {
    let mut h = start().await;
    // DC-CAP, nearest to Potsdam, ships one order a day.
    let mut cap = node("DC-CAP", NodeKind::Warehouse, 52.40, 13.10);
    cap.daily_capacity = 1;
    h.create_nodes([cap, node("DC-MUC", NodeKind::Warehouse, 48.14, 11.58)])
        .await;
    h.create_items(&["MUG"]).await;
    h.receive("DC-CAP", "MUG", 10).await;
    h.receive("DC-MUC", "MUG", 10).await;
    let cap_of = |d: &oms_proto::routing::Decision| {
        d.explanation
            .as_ref()
            .unwrap()
            .candidates
            .iter()
            .find(|c| c.node_id == "DC-CAP")
            .map(|c| (c.rejected, c.rejection_reason.clone()))
            .unwrap()
    };

    let first = h.plan(&rid(), order("o1", &[("MUG", 1)])).await;
    assert_eq!(placed(&first), [at("1", "DC-CAP", 1)]);
    let second = h.plan(&rid(), order("o2", &[("MUG", 1)])).await;
    assert_eq!(placed(&second), [at("1", "DC-MUC", 1)]);
    assert_eq!(
        cap_of(&second),
        (true, "daily capacity of 1 order used up".into())
    );

    // o1 is cancelled: its shipment no longer counts, once.
    let release = ReleaseDecisionRequest {
        request_id: "rel-1".into(),
        name: first.name.clone(),
        reason: "order cancelled".into(),
        ..Default::default()
    };
    let released = h
        .client
        .release_decision(authed(TENANT, release.clone()))
        .await
        .unwrap()
        .into_inner()
        .decision
        .unwrap();
    assert!(released.release_time.is_some());
    assert_eq!(released.release_reason, "order cancelled");
    let replay = h
        .client
        .release_decision(authed(TENANT, release))
        .await
        .unwrap()
        .into_inner()
        .decision
        .unwrap();
    assert_eq!(replay, released);
    let again = h
        .client
        .release_decision(authed(
            TENANT,
            ReleaseDecisionRequest {
                request_id: "rel-2".into(),
                name: first.name.clone(),
                reason: "twice".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .decision
        .unwrap();
    assert_eq!(again, released, "a released decision stays as it was");
    let stored = h
        .client
        .get_decision(authed(
            TENANT,
            GetDecisionRequest {
                name: first.name.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .decision
        .unwrap();
    assert_eq!(stored.release_time, released.release_time);
    // The feed says so, once.
    let mut feed = h
        .client
        .watch_routing_events(authed(TENANT, WatchRoutingEventsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let mut seen = 0;
    let mut events = 0;
    // Two plans, then the release: three events so far.
    while events < 3 {
        let ev = feed.next().await.unwrap().unwrap();
        events += 1;
        if let Some(Kind::DecisionReleased(r)) = ev.kind {
            assert_eq!(r.decision.unwrap(), released);
            seen += 1;
        }
    }
    assert_eq!(seen, 1);

    let third = h.plan(&rid(), order("o3", &[("MUG", 1)])).await;
    // The second release asked nothing more of the feed: next is o3's plan.
    match feed.next().await.unwrap().unwrap().kind {
        Some(Kind::OrderRouted(r)) => assert_eq!(r.decision.unwrap().name, third.name),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        placed(&third),
        [at("1", "DC-CAP", 1)],
        "the capacity is back, and was given back once"
    );
    // DC-CAP rejects o3: the reroute takes its shipment off DC-CAP's load.
    let rerouted = h
        .client
        .reroute_order(authed(
            TENANT,
            RerouteOrderRequest {
                request_id: rid(),
                order: Some(order("o3", &[("MUG", 1)])),
                failed_node_id: "DC-CAP".into(),
                reason: RerouteReason::Rejected as i32,
                penalty: None,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .decision
        .unwrap();
    assert_eq!(placed(&rerouted), [at("1", "DC-MUC", 1)]);
    let fourth = h.plan(&rid(), order("o4", &[("MUG", 1)])).await;
    assert_eq!(cap_of(&fourth), (false, String::new()));

    let err = h
        .client
        .release_decision(authed(
            TENANT,
            ReleaseDecisionRequest {
                request_id: rid(),
                name: "decisions/nope".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status::fields(&err), ["name"]);
    let err = h
        .client
        .release_decision(authed(
            "globex",
            ReleaseDecisionRequest {
                request_id: rid(),
                name: first.name.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn a_decision_released_at_some_nodes_keeps_counting_at_the_others() {
    let mut h = start().await;
    // DC-CAP (mugs) and DC-TEA (tea) ship one order a day each; DC-MUC
    // has mugs too, further away.
    let mut cap = node("DC-CAP", NodeKind::Warehouse, 52.40, 13.10);
    cap.daily_capacity = 1;
    let mut tea = node("DC-TEA", NodeKind::Warehouse, 52.41, 13.11);
    tea.daily_capacity = 1;
    h.create_nodes([cap, tea, node("DC-MUC", NodeKind::Warehouse, 48.14, 11.58)])
        .await;
    h.create_items(&["MUG", "TEA"]).await;
    h.receive("DC-CAP", "MUG", 10).await;
    h.receive("DC-MUC", "MUG", 10).await;
    h.receive("DC-TEA", "TEA", 10).await;
    let first = h.plan(&rid(), order("o1", &[("MUG", 1), ("TEA", 1)])).await;
    assert_eq!(placed(&first), [at("1", "DC-CAP", 1), at("2", "DC-TEA", 1)]);
    let release = |request_id: &str, nodes: &[&str]| ReleaseDecisionRequest {
        request_id: request_id.into(),
        name: first.name.clone(),
        reason: "order cancelled; these nodes shipped none of it".into(),
        node_ids: nodes.iter().map(|n| n.to_string()).collect(),
    };
    // A node the decision does not ship from: refused, nothing changed.
    let err = h
        .client
        .release_decision(authed(TENANT, release("at-1", &["DC-MUC"])))
        .await
        .unwrap_err();
    assert_eq!(status::fields(&err), ["node_ids[0]"]);

    // Released at DC-TEA: its capacity is back, DC-CAP's is not.
    let at_tea = h
        .client
        .release_decision(authed(TENANT, release("at-2", &["DC-TEA", "DC-TEA"])))
        .await
        .unwrap()
        .into_inner()
        .decision
        .unwrap();
    assert_eq!(at_tea.released_node_ids, ["DC-TEA"]);
    assert!(at_tea.release_time.is_none(), "it still counts at DC-CAP");
    let again = h
        .client
        .release_decision(authed(TENANT, release("at-3", &["DC-TEA"])))
        .await
        .unwrap()
        .into_inner()
        .decision
        .unwrap();
    assert_eq!(again, at_tea, "a node given back already changes nothing");
    let tea_only = h.plan(&rid(), order("o2", &[("TEA", 1)])).await;
    assert_eq!(placed(&tea_only), [at("1", "DC-TEA", 1)]);
    let mugs = h.plan(&rid(), order("o3", &[("MUG", 1)])).await;
    assert_eq!(
        placed(&mugs),
        [at("1", "DC-MUC", 1)],
        "DC-CAP still counts o1"
    );

    // Released whole: DC-CAP's capacity is back too, and DC-TEA's is not
    // given back twice (o2 counts there).
    let whole = h
        .client
        .release_decision(authed(TENANT, release("at-4", &[])))
        .await
        .unwrap()
        .into_inner()
        .decision
        .unwrap();
    assert!(whole.release_time.is_some());
    let mugs = h.plan(&rid(), order("o4", &[("MUG", 1)])).await;
    assert_eq!(placed(&mugs), [at("1", "DC-CAP", 1)]);
    let tea_again = h.plan(&rid(), order("o5", &[("TEA", 1)])).await;
    assert!(placed(&tea_again).is_empty(), "{tea_again:?}");
}

/// Inventory answers node-scope availability in pages of 10,000 figures;
/// a plan reads them all. 20 SKUs at 600 warehouses are 12,000 figures,
/// and the one node that can ship the last SKU's line is on the second
/// page.
#[tokio::test]
async fn a_plan_reads_every_page_of_availability() {
    use oms_proto::inventory::{
        ImportStockSnapshotRequest, SnapshotHeader, SnapshotRow,
        import_stock_snapshot_request::Part,
    };
    let mut h = start().await;
    let nodes: Vec<String> = (0..600).map(|n| format!("N{n:03}")).collect();
    h.create_nodes(
        (nodes.iter().enumerate())
            .map(|(i, n)| node(n, NodeKind::Warehouse, 52.0 + i as f64 * 0.001, 13.0)),
    )
    .await;
    let skus: Vec<String> = (0..20).map(|k| format!("K{k:02}")).collect();
    h.create_items(&skus.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    // One unit of every SKU everywhere; five of the last SKU at the last
    // node only.
    let header = Part::Header(SnapshotHeader {
        request_id: rid(),
        source: "wms".into(),
        count_time: None,
    });
    let rows = skus.iter().flat_map(|s| {
        nodes.iter().map(move |n| {
            let five = s == "K19" && n == "N599";
            Part::Row(SnapshotRow {
                node_id: n.clone(),
                sku: s.clone(),
                on_hand: if five { 5 } else { 1 },
                ..Default::default()
            })
        })
    });
    let msgs: Vec<_> = (std::iter::once(header).chain(rows))
        .map(|part| ImportStockSnapshotRequest { part: Some(part) })
        .collect();
    let imported = h
        .inv
        .import_stock_snapshot(authed(TENANT, futures::stream::iter(msgs)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(imported.rows_applied, 12_000, "{:?}", imported.errors);
    let mut lines: Vec<(&str, i64)> = skus.iter().map(|s| (s.as_str(), 1)).collect();
    lines[19].1 = 5;
    let d = h.plan(&rid(), order("paged", &lines)).await;
    assert!(d.backorders.is_empty(), "{:?}", d.backorders);
    let last = placed(&d).into_iter().filter(|(line, _, _)| line == "20");
    assert_eq!(last.collect::<Vec<_>>(), [at("20", "N599", 5)]);
}
