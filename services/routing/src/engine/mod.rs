//! The sourcing engine: pure, no I/O. Given the rules, the order and the
//! situation (nodes, stock, load, penalties), it returns a plan with
//! everything needed to explain it. `PlanOrder`, `SimulateRouting`,
//! `RerouteOrder` and the benchmark all run this same code.
pub mod carrier;
pub mod model;
pub mod render;
pub mod rules;
pub mod score;
pub mod solve;
#[cfg(test)]
mod tests;

use model::{Assignment, Backorder, Candidate, Order, Plan, Reject, RuleEval, Situation};
use oms_proto::common::{DeliveryMethod, ServiceLevel};
use oms_proto::routing::{PickupFallback, UnfillableAction};
use rules::{Rule, RuleSet};
use score::Target;
use std::cell::OnceCell;

/// Why `rule` does not apply to `order`, or None when it does.
fn mismatch(rule: &Rule, order: &Order) -> Option<String> {
    if !rule.channels.is_empty() && !rule.channels.contains(&order.channel) {
        return Some(format!(
            "channel {:?} is not one of the rule's",
            order.channel
        ));
    }
    if !rule.delivery_methods.is_empty() && !rule.delivery_methods.contains(&order.delivery) {
        return Some(format!(
            "delivery method {} is not one of the rule's",
            order.delivery.as_str_name()
        ));
    }
    if !rule.service_levels.is_empty() && !rule.service_levels.contains(&order.service_level) {
        return Some(format!(
            "service level {} is not one of the rule's",
            order.service_level.as_str_name()
        ));
    }
    if let Some(min) = rule.min_priority
        && order.priority < min
    {
        return Some(format!(
            "priority {} is below the rule's minimum {min}",
            order.priority
        ));
    }
    if !rule.countries.is_empty() && !rule.countries.contains(&order.country) {
        return Some(format!(
            "destination country {:?} is not one of the rule's",
            order.country
        ));
    }
    if !rule.regions.is_empty() && !rule.regions.contains(&order.region) {
        return Some(format!(
            "destination region {:?} is not one of the rule's",
            order.region
        ));
    }
    None
}

/// Why a single-shipment rule cannot fill an order that no node holds
/// whole.
const NO_WHOLE_NODE: &str =
    "no node that ships holds the whole order and the rule ships it from one";

/// How a rule that could not fill the order, and passed it on, is
/// explained.
fn fell_through(why: &str) -> String {
    format!("could not fill the order ({why}); next rule")
}

/// Whether `rule` ships an order whole from one node or not at all (one
/// shipment, and a partial plan of no use).
fn whole_only(rule: &Rule) -> bool {
    rule.max_shipments == 1 && rule.when_unfillable != UnfillableAction::PartialBackorder
}

/// One rule's attempt.
struct Attempt {
    assignments: Vec<Assignment>,
    left: Vec<i64>,
    shipments: usize,
    cost: f64,
    candidates: Vec<Candidate>,
    /// Why units were left, when they were.
    why: Option<String>,
    /// Why each line was left short, where its stock says (empty when no
    /// line was, or the rule's limits say why).
    lines_why: Vec<Option<String>>,
}

impl Attempt {
    /// Why line `l` was left short: its own reason, else the attempt's.
    fn why_line(&self, l: usize) -> Option<&str> {
        let own = self.lines_why.get(l).and_then(Option::as_deref);
        own.or(self.why.as_deref())
    }
}

/// Plans `order` under `rules` in `s`.
pub fn plan(rules: &RuleSet, order: &Order, s: &Situation) -> Plan {
    let mut demand = vec![0i64; order.skus.len()];
    for l in &order.lines {
        demand[l.sku] += l.quantity;
    }
    let mut plan = Plan::default();
    // A pickup order goes to its store; where that is impossible, nothing
    // else can help.
    let mut store = None;
    let mut origin = order.ship_to_geo;
    if order.delivery == DeliveryMethod::Pickup {
        let found = s.network.index_of(&order.pickup_node_id);
        let problem = match found.map(|i| &s.network.nodes[i]) {
            None => Some(format!(
                "pickup store {:?} is not a node of this tenant",
                order.pickup_node_id
            )),
            Some(n) if !n.enabled => Some(format!("pickup store {} is disabled", n.id)),
            Some(n) if !n.pickup => Some(format!("pickup store {} does not take pickups", n.id)),
            Some(n) => {
                origin = n.geo;
                None
            }
        };
        if let Some(why) = problem {
            backorder_all(&mut plan, order, |_| why.clone());
            plan.shortfall = Some(why);
            return plan;
        }
        store = found;
    }
    // The last rule that could not fill the order, and its attempt (None
    // while it has not been worked out: see below).
    let mut last: Option<(usize, Option<Attempt>)> = None;
    // Read when the first rule matches; no rule matching reads no stock.
    let holdings = OnceCell::new();
    let target = || Target {
        order,
        demand: &demand,
        origin,
        pickup_store: None,
        holdings: holdings.get_or_init(|| score::holdings(&demand, s)),
    };
    for (ri, rule) in rules.rules.iter().enumerate() {
        if let Some(why) = mismatch(rule, order) {
            plan.rules.push(RuleEval {
                rule: ri,
                matched: false,
                reason: why,
            });
            continue;
        }
        let t = target();
        // A rule that ships the order whole from one node or not at all,
        // when no node holds all of it: it cannot fill the order whatever
        // else it asks of the nodes. Its candidates are worked out only if
        // it turns out to be the last rule tried (they are then the
        // plan's); a later rule that takes the order never needs them.
        if store.is_none()
            && whole_only(rule)
            && rule.when_unfillable != UnfillableAction::Hold
            && !t.holdings.iter().any(|h| h.whole)
        {
            plan.rules.push(RuleEval {
                rule: ri,
                matched: true,
                reason: fell_through(NO_WHOLE_NODE),
            });
            last = Some((ri, None));
            continue;
        }
        let a = attempt(rule, &t, store, s);
        let filled = a.left.iter().all(|l| *l == 0);
        let action = rule.when_unfillable;
        if filled || action == UnfillableAction::PartialBackorder {
            plan.rules.push(RuleEval {
                rule: ri,
                matched: true,
                reason: String::new(),
            });
            accept(&mut plan, ri, a);
            return plan;
        }
        if action == UnfillableAction::Hold {
            plan.rules.push(RuleEval {
                rule: ri,
                matched: true,
                reason: String::new(),
            });
            let held = |why: Option<&str>| {
                format!("held: {}", why.unwrap_or("the rule cannot fill the order"))
            };
            backorder_all(&mut plan, order, |l| held(a.why_line(l)));
            plan.shortfall = Some(held(a.why.as_deref()));
            plan.rule = Some(ri);
            plan.hold = true;
            plan.candidates = a.candidates;
            return plan;
        }
        plan.rules.push(RuleEval {
            rule: ri,
            matched: true,
            reason: fell_through(a.why.as_deref().unwrap_or("short")),
        });
        last = Some((ri, Some(a)));
    }
    let last = last.map(|(ri, a)| {
        a.unwrap_or_else(|| {
            let t = target();
            // No node holds the whole order: that is each line's reason
            // too, not the stock the rule then found at no node.
            Attempt {
                why: Some(NO_WHOLE_NODE.to_owned()),
                lines_why: vec![],
                ..attempt(&rules.rules[ri], &t, store, s)
            }
        })
    });
    let why = |said: Option<&str>| match &last {
        None => "no rule matches the order".to_owned(),
        Some(_) => format!(
            "no rule could fill the order; the last said: {}",
            said.unwrap_or("short")
        ),
    };
    let said = |l| last.as_ref().and_then(|a| a.why_line(l));
    backorder_all(&mut plan, order, |l| why(said(l)));
    plan.shortfall = Some(why(last.as_ref().and_then(|a| a.why.as_deref())));
    if let Some(a) = last {
        plan.candidates = a.candidates;
    }
    plan
}

/// Backorders every line whole, each for the reason `why` gives it.
fn backorder_all(plan: &mut Plan, order: &Order, why: impl Fn(usize) -> String) {
    plan.assignments.clear();
    plan.backorders = order
        .lines
        .iter()
        .enumerate()
        .map(|(line, l)| Backorder {
            line,
            quantity: l.quantity,
            reason: why(line),
        })
        .collect();
}

fn accept(plan: &mut Plan, ri: usize, mut a: Attempt) {
    plan.rule = Some(ri);
    plan.shipments = a.shipments;
    plan.cost = a.cost;
    plan.candidates = std::mem::take(&mut a.candidates);
    plan.assignments = std::mem::take(&mut a.assignments);
    plan.backorders = a
        .left
        .iter()
        .enumerate()
        .filter(|(_, q)| **q > 0)
        .map(|(line, q)| Backorder {
            line,
            quantity: *q,
            reason: a.why_line(line).unwrap_or_default().to_owned(),
        })
        .collect();
    if !plan.backorders.is_empty() {
        plan.shortfall = a.why;
    }
}

/// Runs one rule: the pickup store's own stock first (pickup orders), then
/// the rule's nodes.
fn attempt(rule: &Rule, t: &Target, store: Option<usize>, s: &Situation) -> Attempt {
    let order = t.order;
    let need: Vec<i64> = order.lines.iter().map(|l| l.quantity).collect();
    let sku_of: Vec<usize> = order.lines.iter().map(|l| l.sku).collect();
    let penalty = rule.ranking.iter().map(|(_, w)| w).sum::<f64>() + 1.0;
    let mut assignments = Vec::new();
    let mut left = need.clone();
    let mut max_shipments = rule.max_shipments;
    let mut from_store = false;
    let mut candidates = Vec::new();
    if let Some(p) = store {
        // What the store holds of each line, whole lines unless the rule
        // spreads lines.
        // A store outside the channel's pool ships none of its own stock:
        // it only receives what the pool's nodes transfer.
        let gives = !s.outside_pool(p);
        let mut run: Vec<i64> = (0..order.skus.len())
            .map(|k| if gives { s.stock.get(k, p) } else { 0 })
            .collect();
        let mut take = vec![0i64; need.len()];
        for (l, want) in need.iter().enumerate() {
            let have = run[sku_of[l]];
            let q = if rule.line_split {
                (*want).min(have)
            } else if *want <= have {
                *want
            } else {
                0
            };
            take[l] = q;
            run[sku_of[l]] -= q;
        }
        let all = take.iter().zip(&need).all(|(a, b)| a == b);
        // Sourcing elsewhere as well needs a second shipment; with one
        // allowed, the store either has everything or ships nothing.
        let partial_ok = max_shipments > 1 && rule.pickup_fallback != PickupFallback::Fail;
        if all || partial_ok || rule.pickup_fallback == PickupFallback::Fail {
            for (line, q) in take.iter().enumerate() {
                if *q > 0 {
                    assignments.push(Assignment {
                        line,
                        node: p,
                        quantity: *q,
                        transfer_to: None,
                    });
                    left[line] -= q;
                    from_store = true;
                }
            }
        }
        candidates.push(Candidate {
            node: p,
            reject: None,
            score: 0.0,
            parts: [(0.0, 0.0); 6],
            chosen: from_store,
        });
        if all {
            return Attempt {
                assignments,
                left,
                shipments: 1,
                cost: 0.0,
                candidates,
                why: None,
                lines_why: vec![],
            };
        }
        if rule.pickup_fallback == PickupFallback::Fail {
            return Attempt {
                assignments,
                left,
                shipments: usize::from(from_store),
                cost: 0.0,
                candidates,
                why: Some(format!(
                    "pickup store {} lacks stock and the rule does not transfer",
                    s.network.nodes[p].id
                )),
                lines_why: vec![],
            };
        }
        if from_store {
            max_shipments -= 1;
        }
    }
    let tt = Target {
        pickup_store: store,
        ..*t
    };
    let mut scored = Vec::with_capacity(s.network.nodes.len());
    score::candidates(rule, &tt, s, &mut scored);
    let cands: Vec<usize> = scored
        .iter()
        .filter(|c| c.reject.is_none())
        .map(|c| c.node)
        .collect();
    let score: Vec<f64> = scored.iter().map(|c| c.score).collect();
    let problem = solve::Problem {
        need: &left,
        sku_of: &sku_of,
        skus: order.skus.len(),
        cands: &cands,
        score: &score,
        stock: s.stock,
        penalties: s.penalties,
        penalty,
        max_shipments,
        line_split: rule.line_split,
    };
    let mut sol = if max_shipments == 0 {
        solve::Solution {
            left: left.clone(),
            ..Default::default()
        }
    } else {
        solve::solve(&problem)
    };
    let mut why = None;
    min_value(rule, order, s, &problem, &mut sol, &mut why);
    for n in &sol.used {
        scored[*n].chosen = true;
    }
    let transfer_to = store;
    assignments.extend(sol.placed.iter().map(|x| Assignment {
        line: x.line,
        node: x.node,
        quantity: x.quantity,
        transfer_to,
    }));
    let mut lines_why = vec![None; order.lines.len()];
    if sol.left.iter().any(|l| *l > 0) && why.is_none() {
        for (l, w) in lines_why.iter_mut().enumerate() {
            if sol.left[l] > 0 {
                *w = line_short(l, rule, order, (&problem, &scored), &sol, s);
            }
        }
        why = Some(shortfall(rule, &lines_why));
    }
    // The pickup store, when it ships its own stock, is a chosen candidate
    // rather than the receiver of the transfer.
    if let (Some(p), true) = (store, from_store) {
        scored[p] = candidates.remove(0);
    }
    Attempt {
        assignments,
        left: sol.left,
        shipments: sol.used.len() + usize::from(from_store),
        cost: sol.cost,
        candidates: scored,
        why,
        lines_why,
    }
}

/// Enforces the minimum shipment value of split plans: a shipment below it
/// is dropped and its units left unplaced.
fn min_value(
    rule: &Rule,
    order: &Order,
    s: &Situation,
    p: &solve::Problem,
    sol: &mut solve::Solution,
    why: &mut Option<String>,
) {
    if rule.min_shipment_value <= 0
        || sol.used.len() < 2
        || rule.min_value_currency != order.currency
    {
        return;
    }
    let value = |sol: &solve::Solution, n: usize| -> i64 {
        sol.placed
            .iter()
            .filter(|x| x.node == n)
            .map(|x| x.quantity.saturating_mul(order.lines[x.line].unit_price))
            // Compared with a threshold only: a value beyond i64 is large.
            .fold(0i64, i64::saturating_add)
    };
    let small: Vec<(usize, i64)> = sol
        .used
        .iter()
        .map(|n| (*n, value(sol, *n)))
        .filter(|(_, v)| *v < rule.min_shipment_value)
        .collect();
    for (n, v) in small {
        for x in sol.placed.iter().filter(|x| x.node == n) {
            sol.left[x.line] += x.quantity;
        }
        sol.placed.retain(|x| x.node != n);
        sol.used.retain(|u| *u != n);
        *why = Some(format!(
            "a shipment from {} would carry {} {}, below the rule's minimum of {} {} (minor units)",
            s.network.nodes[n].id, v, order.currency, rule.min_shipment_value, order.currency
        ));
    }
    sol.cost = p.cost_of(&sol.placed, &sol.used);
}

/// Why line `l` was left short, when the stock at the eligible nodes says
/// so: each backordered line names its own SKU (every line of a 200-line
/// order said the first short line's "of S1" before 2026-12-04). `scored`
/// are every node's candidates, eligible or set aside.
fn line_short(
    l: usize,
    rule: &Rule,
    order: &Order,
    (p, scored): (&solve::Problem, &[Candidate]),
    sol: &solve::Solution,
    s: &Situation,
) -> Option<String> {
    // Too little at the eligible nodes: say where the rest is, and why
    // those nodes were set aside (a summary that only said "eligible
    // nodes hold 0" read as "out of stock" when a node's capacity was
    // used up).
    let short_of = |sku: usize, total: i64, wanted: i64| {
        format!(
            "eligible nodes hold {total} of {} in all, {wanted} wanted{}",
            order.skus[sku],
            set_aside(sku, scored, s)
        )
    };
    let sku = order.lines[l].sku;
    let total: i64 = p.cands.iter().map(|c| p.stock.get(sku, *c)).sum();
    if rule.line_split {
        let wanted = order.lines[l].quantity;
        return (total < wanted).then(|| short_of(sku, total, wanted));
    }
    // A SKU no eligible node holds enough of at once.
    let best = p
        .cands
        .iter()
        .map(|c| p.stock.get(sku, *c))
        .max()
        .unwrap_or(0);
    let left = sol.left[l];
    if best >= left {
        return None;
    }
    if total < left || best == 0 {
        return Some(short_of(sku, total, left));
    }
    Some(format!(
        "no eligible node holds {left} of {} (most at one node: {best}) and the rule does not split lines",
        order.skus[sku]
    ))
}

/// Why units were left unplaced under `rule`: the first short line's
/// stock, or the rule's limits.
fn shortfall(rule: &Rule, lines_why: &[Option<String>]) -> String {
    if let Some(why) = lines_why.iter().flatten().next() {
        return why.clone();
    }
    if rule.max_shipments == 1 {
        return "no single eligible node holds the whole order and the rule does not split".into();
    }
    format!(
        "the order would need more than the rule's {} shipments",
        rule.max_shipments
    )
}

/// The nodes set aside that hold `sku`, most units first (three at
/// most), each with why: "; set aside: DC1 with 10 (daily capacity of 1
/// order used up)"; empty when none holds any.
fn set_aside(sku: usize, scored: &[Candidate], s: &Situation) -> String {
    let mut aside: Vec<(i64, &Candidate)> = scored
        .iter()
        .filter(|c| c.reject.is_some())
        .map(|c| (s.stock.get(sku, c.node), c))
        .filter(|(units, _)| *units > 0)
        .collect();
    if aside.is_empty() {
        return String::new();
    }
    aside.sort_by_key(|(units, _)| std::cmp::Reverse(*units));
    let named: Vec<String> = aside
        .iter()
        .take(3)
        .filter_map(|(units, c)| {
            let why = reject_text(c.reject?);
            Some(format!(
                "{} with {units} ({why})",
                s.network.nodes[c.node].id
            ))
        })
        .collect();
    let more = match aside.len().saturating_sub(3) {
        0 => String::new(),
        n => format!(", and {n} more"),
    };
    format!("; set aside: {}{more}", named.join(", "))
}

/// The service level as the engine reads it.
pub fn service_level(v: i32) -> ServiceLevel {
    match ServiceLevel::try_from(v).unwrap_or_default() {
        ServiceLevel::Unspecified => ServiceLevel::Standard,
        l => l,
    }
}

/// Every reason a node can be rejected, for people.
pub fn reject_text(r: Reject) -> String {
    match r {
        Reject::Disabled => "disabled".into(),
        Reject::Excluded => "excluded (by the rule, or it just failed this order)".into(),
        Reject::OutsidePool => "not in the pool of nodes of the order's channel".into(),
        Reject::Kind => "kind not allowed by the rule".into(),
        Reject::CannotShip => "does not ship to customers".into(),
        Reject::NoPickup => "does not take pickups".into(),
        Reject::NoShipFromStore => "store without ship-from-store".into(),
        Reject::Region => "region not allowed by the rule".into(),
        Reject::DistanceUnknown => "no coordinates to check the rule's distance limit".into(),
        Reject::TooFar { km, limit } => format!("{km:.0} km away, beyond the rule's {limit:.0} km"),
        Reject::CapacityExhausted { capacity } => {
            let orders = if capacity == 1 { "order" } else { "orders" };
            format!("daily capacity of {capacity} {orders} used up")
        }
        Reject::CapacityBelow { left, min } => {
            format!("{left} orders of capacity left, the rule wants {min}")
        }
        Reject::NoStock => "holds none of the ordered SKUs".into(),
        Reject::NotWhole => "cannot ship the whole order, and the rule ships it in one".into(),
        Reject::PickupStore => "the pickup store itself (receives the transfer)".into(),
    }
}
