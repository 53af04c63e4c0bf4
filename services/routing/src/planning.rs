//! Plan, reroute and simulate: gather the situation (nodes, live stock,
//! today's load, penalties), run the engine, and store what it decided.
use crate::engine::{
    self,
    model::{Network, Order, Situation, Stock},
    render, rules,
};
use crate::service::{Begin, DOMAIN, Routing, checked, db, emit, invalid};
use crate::{input, network, repo, rulesets};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use oms_kernel::{Paging, Tenant, Violations, parse_name, parse_uuid_name};
use oms_proto::routing::{watch_routing_events_response::Kind, *};
use oms_runtime::{status, time::to_timestamp};
use std::collections::HashMap;
use std::sync::Arc;
use tonic::Status;
use uuid::Uuid;

/// Most orders one simulation plans.
const MAX_SIMULATED: usize = 500;
/// Most stock overrides one simulation takes: each is applied to every
/// order simulated.
const MAX_OVERRIDES: usize = 10_000;
/// Longest penalty a reroute may ask for.
const MAX_PENALTY: Duration = Duration::days(30);

/// Everything but the order that a plan depends on.
struct World {
    net: Arc<Network>,
    availability: HashMap<String, Vec<i64>>,
    used: Vec<i64>,
    /// (node id, sku) penalised now.
    penalties: Vec<(String, String)>,
    now: DateTime<Utc>,
}

impl World {
    async fn gather(r: &Routing, tenant: &Tenant, skus: &[String]) -> Result<World, Status> {
        let now = Utc::now();
        let mut net = r.inventory.network(tenant, false).await?;
        let (mut availability, stale) = r.inventory.availability(tenant, &net, skus).await?;
        if stale {
            // Stock at a node created (or enabled) since the network was
            // read: read it again rather than plan without that node (the
            // order waited for the next plan, 30 s, with "eligible nodes
            // hold 0").
            net = r.inventory.network(tenant, true).await?;
            (availability, _) = r.inventory.availability(tenant, &net, skus).await?;
        }
        let ids: Vec<String> = net.nodes.iter().map(|n| n.id.clone()).collect();
        let days: Vec<NaiveDate> = net
            .nodes
            .iter()
            .map(|n| local_day(now, n.utc_offset_minutes))
            .collect();
        let mut used = vec![0; net.nodes.len()];
        for (id, q) in repo::load(&r.pool, &ids, &days).await.map_err(db)? {
            if let Some(i) = net.index_of(&id) {
                used[i] = q;
            }
        }
        let penalties = repo::penalties(&r.pool, tenant, skus, now)
            .await
            .map_err(db)?;
        Ok(World {
            net,
            availability,
            used,
            penalties,
            now,
        })
    }

    fn stock(&self, order: &Order) -> Stock {
        network::stock(&self.availability, &order.skus, self.net.nodes.len())
    }

    fn penalties(&self, order: &Order) -> Vec<(usize, usize)> {
        self.penalties
            .iter()
            .filter_map(|(n, s)| {
                Some((
                    self.net.index_of(n)?,
                    order.skus.iter().position(|x| x == s)?,
                ))
            })
            .collect()
    }

    /// Runs the engine on `order` and renders its decision.
    fn decide(
        &self,
        rules: &rules::RuleSet,
        rule_set: &str,
        order: &Order,
        stock: &Stock,
        excluded: &[usize],
    ) -> Decision {
        let penalties = self.penalties(order);
        let s = Situation {
            network: &self.net,
            stock,
            used_today: &self.used,
            penalties: &penalties,
            excluded,
            pool: self.net.pool(&order.channel),
            now_epoch_s: self.now.timestamp(),
        };
        let plan = engine::plan(rules, order, &s);
        render::decision(&plan, rules, rule_set, order, &s)
    }
}

fn local_day(now: DateTime<Utc>, offset_minutes: i32) -> NaiveDate {
    (now + Duration::minutes(i64::from(offset_minutes))).date_naive()
}

fn decision_uuid(name: &str) -> Result<Uuid, String> {
    parse_uuid_name(name, "decisions", "a decision")
}

fn decision_id(field: &str, name: &str) -> Result<Uuid, Status> {
    decision_uuid(name).map_err(|e| invalid(Violations::one(field, e)))
}

/// Stores a decision, counts its shipments against node capacity and
/// announces it, in the caller's transaction.
async fn store(
    tx: &mut sqlx::PgConnection,
    tenant: &Tenant,
    rid: &str,
    mut d: Decision,
    kind: DecisionKind,
    input: &RoutingOrder,
    world: &World,
) -> Result<Decision, Status> {
    let id = Uuid::now_v7();
    d.name = format!("decisions/{id}");
    d.decision_id = id.to_string();
    d.kind = kind as i32;
    d.create_time = Some(to_timestamp(world.now));
    let kind_db = if kind == DecisionKind::Reroute {
        "reroute"
    } else {
        "plan"
    };
    repo::insert_decision(tx, tenant, id, kind_db, &d, input, world.now)
        .await
        .map_err(db)?;
    let mut nodes: Vec<&str> = d.assignments.iter().map(|a| a.node_id.as_str()).collect();
    nodes.sort_unstable();
    nodes.dedup();
    let load: Vec<(String, NaiveDate)> = nodes
        .into_iter()
        .filter_map(|n| {
            let i = world.net.index_of(n)?;
            Some((
                n.to_owned(),
                local_day(world.now, world.net.nodes[i].utc_offset_minutes),
            ))
        })
        .collect();
    repo::add_load(tx, tenant, (id, &d.order), &load)
        .await
        .map_err(db)?;
    emit(
        tx,
        tenant,
        &d.order,
        rid,
        Kind::OrderRouted(OrderRouted {
            decision: Some(d.clone()),
        }),
    )
    .await?;
    Ok(d)
}

pub async fn plan(
    r: &Routing,
    tenant: &Tenant,
    req: PlanOrderRequest,
) -> Result<PlanOrderResponse, Status> {
    let input = req.order.clone().unwrap_or_default();
    let (rid, order) = checked(&req.request_id, input::order(&input, "order"))?;
    let (name, live) = rulesets::live(r, tenant).await?;
    let rules = rules::compile(&live);
    let world = World::gather(r, tenant, &order.skus).await?;
    let d = world.decide(&rules, &name, &order, &world.stock(&order), &[]);
    let (mut tx, rid) = match r.begin(tenant, rid, "PlanOrder", &req).await? {
        Begin::Replay(resp) => return Ok(resp),
        Begin::Tx(tx, rid) => (tx, rid),
    };
    let d = store(
        &mut tx,
        tenant,
        rid.as_str(),
        d,
        DecisionKind::Plan,
        &input,
        &world,
    )
    .await?;
    tracing::info!(order = %d.order, decision = %d.name, summary = %d.explanation.as_ref().map(|e| e.summary.as_str()).unwrap_or(""), "order routed");
    r.finish(tx, tenant, &rid, PlanOrderResponse { decision: Some(d) })
        .await
}

pub async fn reroute(
    r: &Routing,
    tenant: &Tenant,
    req: RerouteOrderRequest,
) -> Result<RerouteOrderResponse, Status> {
    let input = req.order.clone().unwrap_or_default();
    let mut v = Violations::new();
    let rid = v.check("request_id", oms_kernel::RequestId::parse(&req.request_id));
    let order = input::order(&input, "order")
        .map_err(|e| v.0.extend(e.0))
        .ok();
    if req.failed_node_id.trim().is_empty() {
        v.add("failed_node_id", "required");
    }
    if matches!(
        RerouteReason::try_from(req.reason),
        Err(_) | Ok(RerouteReason::Unspecified)
    ) {
        v.add("reason", "REJECTED, SHORT_PICKED or CANCELLED");
    }
    let penalty = match &req.penalty {
        None => Duration::hours(1),
        Some(d) => Duration::seconds(d.seconds),
    };
    let penalty = if penalty.is_zero() {
        Duration::hours(1)
    } else {
        penalty
    };
    if penalty < Duration::zero() || penalty > MAX_PENALTY {
        v.add("penalty", "between 0 (one hour) and 30 days");
    }
    let (Some(order), Some(rid), true) = (order, rid, v.is_empty()) else {
        return Err(invalid(v));
    };
    let (name, live) = rulesets::live(r, tenant).await?;
    let rules = rules::compile(&live);
    let mut world = World::gather(r, tenant, &order.skus).await?;
    let failed = world.net.index_of(&req.failed_node_id);
    if failed.is_none() {
        return Err(status::not_found(
            DOMAIN,
            "node",
            &format!("nodes/{}", req.failed_node_id),
        ));
    }
    // The failed node's standing drops for these SKUs now, and it takes no
    // part in this plan at all.
    for sku in &order.skus {
        world
            .penalties
            .push((req.failed_node_id.clone(), sku.clone()));
    }
    let excluded: Vec<usize> = failed.into_iter().collect();
    let d = world.decide(&rules, &name, &order, &world.stock(&order), &excluded);
    let (mut tx, rid) = match r.begin(tenant, rid, "RerouteOrder", &req).await? {
        Begin::Replay(resp) => return Ok(resp),
        Begin::Tx(tx, rid) => (tx, rid),
    };
    let reason = RerouteReason::try_from(req.reason)
        .unwrap_or_default()
        .as_str_name();
    repo::penalise(
        &mut tx,
        tenant,
        &req.failed_node_id,
        &order.skus,
        world.now + penalty,
        reason,
    )
    .await
    .map_err(db)?;
    // The failed node will not ship this order: its shipment no longer
    // counts against the node's capacity.
    let at_failed = repo::Counted::OrderAt(&input.order, &req.failed_node_id);
    repo::release_load(&mut tx, tenant, at_failed)
        .await
        .map_err(db)?;
    let d = store(
        &mut tx,
        tenant,
        rid.as_str(),
        d,
        DecisionKind::Reroute,
        &input,
        &world,
    )
    .await?;
    r.finish(tx, tenant, &rid, RerouteOrderResponse { decision: Some(d) })
        .await
}

pub async fn release(
    r: &Routing,
    tenant: &Tenant,
    req: ReleaseDecisionRequest,
) -> Result<ReleaseDecisionResponse, Status> {
    let mut v = Violations::new();
    let id = v.check("name", decision_uuid(&req.name));
    if req.reason.len() > 500 {
        v.add("reason", "must be at most 500 characters");
    }
    if req.node_ids.len() > 100 {
        v.add("node_ids", "at most 100 nodes");
    }
    let (rid, id) = checked(&req.request_id, id.filter(|_| v.is_empty()).ok_or(v))?;
    let (mut tx, rid) = match r.begin(tenant, rid, "ReleaseDecision", &req).await? {
        Begin::Replay(resp) => return Ok(resp),
        Begin::Tx(tx, rid) => (tx, rid),
    };
    let Some(mut d) = repo::lock_decision(&mut tx, tenant, id).await.map_err(db)? else {
        return Err(status::not_found(DOMAIN, "decision", &req.name));
    };
    let mut v = Violations::new();
    for (i, node) in req.node_ids.iter().enumerate() {
        if !d.assignments.iter().any(|a| a.node_id == *node) {
            v.add(
                format!("node_ids[{i}]"),
                format!("{node} ships nothing of {}", d.name),
            );
        }
    }
    if !v.is_empty() {
        return Err(invalid(v));
    }
    let changed = if d.release_time.is_some() {
        false
    } else if req.node_ids.is_empty() {
        repo::release_load(&mut tx, tenant, repo::Counted::Decision(id))
            .await
            .map_err(db)?;
        d.release_time = Some(to_timestamp(Utc::now()));
        true
    } else {
        // Each node once, those not given back already.
        let mut nodes: Vec<String> = req
            .node_ids
            .iter()
            .filter(|n| !d.released_node_ids.contains(n))
            .cloned()
            .collect();
        nodes.sort();
        nodes.dedup();
        if !nodes.is_empty() {
            repo::release_load(&mut tx, tenant, repo::Counted::DecisionAt(id, &nodes))
                .await
                .map_err(db)?;
        }
        let changed = !nodes.is_empty();
        d.released_node_ids.extend(nodes);
        changed
    };
    if changed {
        d.release_reason = req.reason.clone();
        repo::save_decision(&mut tx, tenant, id, &d)
            .await
            .map_err(db)?;
        let released = Kind::DecisionReleased(DecisionReleased {
            decision: Some(d.clone()),
        });
        emit(&mut tx, tenant, &d.order, rid.as_str(), released).await?;
    }
    r.finish(
        tx,
        tenant,
        &rid,
        ReleaseDecisionResponse { decision: Some(d) },
    )
    .await
}

/// A comparable form of a decision's outcome: placements (line, node,
/// units, transfer), backorders (line, units), hold.
type Outcome = (Vec<(String, String, i64, String)>, Vec<(String, i64)>, bool);

fn outcome(d: &Decision) -> Outcome {
    let mut a: Vec<_> = d
        .assignments
        .iter()
        .map(|a| {
            (
                a.line_id.clone(),
                a.node_id.clone(),
                a.quantity,
                a.transfer_to_node_id.clone(),
            )
        })
        .collect();
    a.sort();
    let mut b: Vec<_> = d
        .backorders
        .iter()
        .map(|b| (b.line_id.clone(), b.quantity))
        .collect();
    b.sort();
    (a, b, d.hold)
}

pub async fn simulate(
    r: &Routing,
    tenant: &Tenant,
    req: SimulateRoutingRequest,
) -> Result<SimulateRoutingResponse, Status> {
    let mut v = Violations::new();
    if req.past_decisions < 0 || req.past_decisions as usize > MAX_SIMULATED {
        v.add("past_decisions", format!("0 to {MAX_SIMULATED}"));
    }
    if req.orders.is_empty() && req.past_decisions == 0 {
        // Nothing to plan: an empty answer would read as "no change".
        v.add(
            "orders",
            "name orders to plan, or past_decisions to replay, or both",
        );
    }
    if req.orders.len() + req.past_decisions.max(0) as usize > MAX_SIMULATED {
        v.add(
            "orders",
            format!("at most {MAX_SIMULATED} orders, given and past together"),
        );
    }
    if req.stock_overrides.len() > MAX_OVERRIDES {
        v.add("stock_overrides", format!("at most {MAX_OVERRIDES}"));
    }
    // Two figures for one SKU at one node: which one holds is a guess.
    let mut overridden: HashMap<(&str, &str), usize> = HashMap::new();
    for (i, o) in req.stock_overrides.iter().enumerate() {
        if let Some(j) = overridden.insert((&o.node_id, &o.sku), i) {
            v.add(
                format!("stock_overrides[{i}]"),
                format!("repeats stock_overrides[{j}] ({} at {})", o.sku, o.node_id),
            );
        }
        if o.node_id.is_empty() {
            v.add(format!("stock_overrides[{i}].node_id"), "required");
        }
        if o.sku.is_empty() {
            v.add(format!("stock_overrides[{i}].sku"), "required");
        }
        if o.available < 0 {
            v.add(
                format!("stock_overrides[{i}].available"),
                "must be zero or more",
            );
        }
    }
    let mut inputs = req.orders.clone();
    let mut orders = Vec::new();
    for (i, o) in req.orders.iter().enumerate() {
        match input::order(o, &format!("orders[{i}]")) {
            Ok(o) => orders.push(o),
            Err(e) => v.0.extend(e.0),
        }
    }
    // Unset: the live rule set against itself (what the stock overrides
    // change).
    let simulated = if req.rule_set.is_empty() {
        rulesets::Named::Active
    } else {
        v.check("rule_set", rulesets::named(&req.rule_set))
            .unwrap_or(rulesets::Named::Active)
    };
    if !v.is_empty() {
        return Err(invalid(v));
    }
    if req.past_decisions > 0 {
        for o in repo::recent_inputs(&r.pool, tenant, i64::from(req.past_decisions))
            .await
            .map_err(db)?
        {
            // Stored inputs passed validation when they were planned.
            if let Ok(order) = input::order(&o, "past") {
                orders.push(order);
                inputs.push(o);
            }
        }
    }
    let (live_name, live) = rulesets::live(r, tenant).await?;
    let live = rules::compile(&live);
    let (sim_name, sim) = match simulated {
        rulesets::Named::Stored(id) => {
            match repo::rule_set(&r.pool, tenant, id).await.map_err(db)? {
                Some(rs) => (rs.name.clone(), rules::compile(&rs)),
                None => return Err(status::not_found(DOMAIN, "rule set", &req.rule_set)),
            }
        }
        rulesets::Named::Builtin => (
            rulesets::BUILTIN.to_owned(),
            rules::compile(&rulesets::builtin()),
        ),
        rulesets::Named::Active => (live_name.clone(), live.clone()),
    };
    let mut skus: Vec<String> = orders.iter().flat_map(|o| o.skus.clone()).collect();
    skus.sort();
    skus.dedup();
    let world = World::gather(r, tenant, &skus).await?;
    // An override that applies to nothing would read as "no change".
    for (i, o) in req.stock_overrides.iter().enumerate() {
        if world.net.index_of(&o.node_id).is_none() {
            let why = format!("nodes/{} is not a node of the tenant", o.node_id);
            v.add(format!("stock_overrides[{i}].node_id"), why);
        }
        if skus.binary_search(&o.sku).is_err() {
            let why = format!("{} is on none of the orders simulated", o.sku);
            v.add(format!("stock_overrides[{i}].sku"), why);
        }
    }
    if !v.is_empty() {
        return Err(invalid(v));
    }
    let mut results = Vec::with_capacity(orders.len());
    for order in &orders {
        let live_stock = world.stock(order);
        let mut sim_stock = live_stock.clone();
        for o in &req.stock_overrides {
            if let (Some(k), Some(n)) = (
                order.skus.iter().position(|s| *s == o.sku),
                world.net.index_of(&o.node_id),
            ) {
                sim_stock.set(k, n, o.available);
            }
        }
        let mut simulated = world.decide(&sim, &sim_name, order, &sim_stock, &[]);
        let mut current = world.decide(&live, &live_name, order, &live_stock, &[]);
        simulated.kind = DecisionKind::Simulation as i32;
        current.kind = DecisionKind::Simulation as i32;
        let changed = outcome(&simulated) != outcome(&current);
        results.push(SimulationResult {
            order: order.name.clone(),
            simulated: Some(simulated),
            live: Some(current),
            changed,
        });
    }
    Ok(SimulateRoutingResponse {
        changed_count: results.iter().filter(|r| r.changed).count() as i32,
        results,
    })
}

pub async fn get(
    r: &Routing,
    tenant: &Tenant,
    req: GetDecisionRequest,
) -> Result<GetDecisionResponse, Status> {
    let id = decision_id("name", &req.name)?;
    match repo::decision(&r.pool, tenant, id).await.map_err(db)? {
        Some(d) => Ok(GetDecisionResponse { decision: Some(d) }),
        None => Err(status::not_found(DOMAIN, "decision", &req.name)),
    }
}

pub async fn list(
    r: &Routing,
    tenant: &Tenant,
    req: ListDecisionsRequest,
) -> Result<ListDecisionsResponse, Status> {
    let mut v = Violations::new();
    if !req.order.is_empty() {
        v.check("order", parse_name(&req.order, "orders"));
    }
    let hash = oms_kernel::fingerprint(&ListDecisionsRequest {
        page_size: 0,
        page_token: String::new(),
        ..req.clone()
    });
    let paging = Paging::<Uuid>::parse(&mut v, req.page_size, &req.page_token, (50, 500), hash);
    if !v.is_empty() {
        return Err(invalid(v));
    }
    let rows = repo::list_decisions(&r.pool, tenant, &req.order, paging.after, paging.fetch())
        .await
        .map_err(db)?;
    let (rows, next_page_token) = paging.page(rows, |(id, _)| *id);
    Ok(ListDecisionsResponse {
        decisions: rows.into_iter().map(|(_, d)| d).collect(),
        next_page_token,
    })
}
