//! Turns a plan into the `Decision` message people and services read:
//! names instead of indexes, and a summary.
use super::model::{Candidate, Order, Plan, Situation};
use super::reject_text;
use super::rules::RuleSet;
use oms_proto::routing as pb;

/// The decision for `plan`; the caller fills name, id, kind and time.
pub fn decision(
    plan: &Plan,
    rules: &RuleSet,
    rule_set: &str,
    order: &Order,
    s: &Situation,
) -> pb::Decision {
    let nodes = &s.network.nodes;
    let line = |l: usize| &order.lines[l];
    let rule = plan.rule.map(|r| &rules.rules[r]);
    let assignments: Vec<pb::Assignment> = plan
        .assignments
        .iter()
        .map(|a| pb::Assignment {
            line_id: line(a.line).id.clone(),
            sku: order.skus[line(a.line).sku].clone(),
            node_id: nodes[a.node].id.clone(),
            quantity: a.quantity,
            transfer_to_node_id: a
                .transfer_to
                .map(|t| nodes[t].id.clone())
                .unwrap_or_default(),
        })
        .collect();
    let backorders: Vec<pb::Backorder> = plan
        .backorders
        .iter()
        .map(|b| pb::Backorder {
            line_id: line(b.line).id.clone(),
            sku: order.skus[line(b.line).sku].clone(),
            quantity: b.quantity,
            reason: b.reason.clone(),
        })
        .collect();
    // Chosen first, then eligible by score, then rejected by node id
    // (node indexes follow ids); sorted before any string is made.
    let mut order_of: Vec<&Candidate> = plan.candidates.iter().collect();
    order_of.sort_by(|a, b| {
        (!a.chosen, a.reject.is_some())
            .cmp(&(!b.chosen, b.reject.is_some()))
            .then(a.score.total_cmp(&b.score))
            .then(a.node.cmp(&b.node))
    });
    let candidates: Vec<pb::CandidateNode> = order_of
        .into_iter()
        .map(|c| pb::CandidateNode {
            node_id: nodes[c.node].id.clone(),
            score: c.score,
            breakdown: rule
                .map(|r| {
                    r.ranking
                        .iter()
                        .enumerate()
                        .filter(|_| c.reject.is_none())
                        .map(|(k, (criterion, _))| pb::CriterionScore {
                            criterion: *criterion as i32,
                            raw: c.parts[k].0,
                            weighted: c.parts[k].1,
                        })
                        .collect()
                })
                .unwrap_or_default(),
            rejected: c.reject.is_some(),
            rejection_reason: c.reject.map(reject_text).unwrap_or_default(),
            penalized_skus: s
                .penalties
                .iter()
                .filter(|(n, _)| *n == c.node)
                .map(|(_, k)| order.skus[*k].clone())
                .collect(),
            chosen: c.chosen,
        })
        .collect();
    let rules_eval = plan
        .rules
        .iter()
        .map(|e| pb::RuleEvaluation {
            rule_id: rules.rules[e.rule].id.clone(),
            matched: e.matched,
            reason: e.reason.clone(),
        })
        .collect();
    let summary = summary(
        plan,
        &assignments,
        rule.map(|r| r.id.as_str()),
        nodes_used(&assignments),
    );
    pb::Decision {
        order: order.name.clone(),
        rule_set: rule_set.to_owned(),
        rule_id: rule.map(|r| r.id.clone()).unwrap_or_default(),
        shipments: plan.shipments as i32,
        cost: plan.cost,
        hold: plan.hold,
        assignments,
        backorders,
        explanation: Some(pb::Explanation {
            rules: rules_eval,
            candidates,
            summary,
        }),
        ..Default::default()
    }
}

fn nodes_used(assignments: &[pb::Assignment]) -> Vec<&str> {
    let mut v: Vec<&str> = assignments.iter().map(|a| a.node_id.as_str()).collect();
    v.sort_unstable();
    v.dedup();
    v
}

fn summary(
    plan: &Plan,
    assignments: &[pb::Assignment],
    rule: Option<&str>,
    nodes: Vec<&str>,
) -> String {
    let by = rule.map(|r| format!("rule {r:?}: ")).unwrap_or_default();
    let short: i64 = plan.backorders.iter().map(|b| b.quantity).sum();
    let backordered = match short {
        1 => "1 unit backordered".to_owned(),
        n => format!("{n} units backordered"),
    };
    if plan.hold {
        return format!(
            "{by}order held; {}",
            plan.shortfall
                .as_deref()
                .unwrap_or("the rule cannot fill it")
        );
    }
    if assignments.is_empty() {
        return format!(
            "{by}nothing placed; {backordered}: {}",
            plan.shortfall.as_deref().unwrap_or("no stock")
        );
    }
    let transfer = assignments
        .iter()
        .find(|a| !a.transfer_to_node_id.is_empty())
        .map(|a| format!(", transferred to pickup store {}", a.transfer_to_node_id))
        .unwrap_or_default();
    let ships = match nodes.len() {
        1 => format!("1 shipment from {}", nodes[0]),
        n => format!("{n} shipments from {}", nodes.join(", ")),
    };
    let mut s = format!("{by}{ships}{transfer}; cost {:.3}", plan.cost);
    if short > 0 {
        s.push_str(&format!(
            "; {backordered}: {}",
            plan.shortfall.as_deref().unwrap_or("short")
        ));
    }
    s
}
