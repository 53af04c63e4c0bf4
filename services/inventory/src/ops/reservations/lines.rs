//! What a reservation's lines are checked against, new or extended: the
//! catalog's SKUs and nodes, and the channel's rule.
use crate::error::{Error, Result};
use crate::gate::ChannelLimit;
use crate::repo;
use oms_kernel::{Tenant, Violations};
use oms_proto::inventory::{channel_rule::Buffer, *};
use std::collections::HashMap;

/// The nodes named among `ids` (empty ones name none) that `tenant` may
/// use, with whether each is enabled; no query when none is named.
pub(super) async fn named_nodes(
    tx: &mut sqlx::PgConnection,
    tenant: &Tenant,
    mut ids: Vec<String>,
) -> Result<HashMap<String, bool>> {
    ids.retain(|n| !n.is_empty());
    ids.sort();
    ids.dedup();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    Ok(repo::nodes::visible(&mut *tx, tenant, &ids).await?)
}

/// Refuses lines (`field[i]`: SKU and node) at a disabled node, as a
/// precondition (`NODE_DISABLED`: the node may be enabled again, and a
/// caller that planned by it plans again); before 2026-12-04 they were
/// field violations.
pub(super) fn disabled_lines<'a>(
    field: &str,
    lines: impl Iterator<Item = (&'a str, &'a str)>,
    nodes: &HashMap<String, bool>,
) -> Result<()> {
    let at_disabled: Vec<(usize, &str)> = lines
        .enumerate()
        .filter(|(_, (_, node))| nodes.get(*node) == Some(&false))
        .map(|(i, (_, node))| (i, node))
        .collect();
    let Some((_, first)) = at_disabled.first() else {
        return Ok(());
    };
    let fields: Vec<String> = at_disabled
        .iter()
        .map(|(i, node)| format!("{field}[{i}].node_id: nodes/{node}"))
        .collect();
    Err(Error::precondition(
        "NODE_DISABLED",
        format!("nodes/{first}"),
        format!("disabled: {}", fields.join(", ")),
    ))
}

/// Violations for lines (`field[i]`: SKU and node) naming an unknown SKU
/// or an unknown node.
pub(super) fn unknown_lines<'a>(
    field: &str,
    lines: impl Iterator<Item = (&'a str, &'a str)>,
    items: &std::collections::HashSet<String>,
    nodes: &HashMap<String, bool>,
) -> Violations {
    let mut v = Violations::new();
    for (i, (sku, node)) in lines.enumerate() {
        if !items.contains(sku) {
            v.add(
                format!("{field}[{i}].sku"),
                format!("items/{sku} not found"),
            );
        }
        match nodes.get(node) {
            _ if node.is_empty() => {}
            None => v.add(
                format!("{field}[{i}].node_id"),
                format!("nodes/{node} not found"),
            ),
            Some(_) => {}
        }
    }
    v
}

/// Refuses entries (their nodes, in order) at nodes outside the pool of a
/// channel's rule: units a channel took there would be sold from stock the
/// rule keeps from it, and its pool would look untouched. A precondition,
/// not bad input: the rule may change (and routing plans by the rule it
/// last read), so a caller plans again.
pub(super) fn outside_pool<'a>(
    field: &str,
    rule: Option<&ChannelRule>,
    nodes: impl Iterator<Item = &'a str>,
) -> Result<()> {
    let Some(rule) = rule.filter(|r| !r.node_ids.is_empty()) else {
        return Ok(());
    };
    let outside: Vec<String> = nodes
        .enumerate()
        .filter(|(_, n)| !n.is_empty() && !rule.node_ids.iter().any(|p| p == n))
        .map(|(i, n)| format!("{field}[{i}].node_id: nodes/{n}"))
        .collect();
    if outside.is_empty() {
        return Ok(());
    }
    Err(Error::precondition(
        "OUTSIDE_CHANNEL_POOL",
        rule.channel.clone(),
        format!(
            "not in the pool of nodes of {}: {}",
            rule.channel,
            outside.join(", ")
        ),
    ))
}

/// The gate's view of a channel's allocation rule.
pub(super) fn channel_limit(rule: &ChannelRule) -> ChannelLimit {
    ChannelLimit {
        pool: rule.node_ids.clone(),
        buffer_percent: match rule.buffer {
            Some(Buffer::BufferPercent(p)) => i64::from(p),
            _ => 0,
        },
        buffer_quantity: match rule.buffer {
            Some(Buffer::BufferQuantity(q)) => q,
            _ => 0,
        },
    }
}
