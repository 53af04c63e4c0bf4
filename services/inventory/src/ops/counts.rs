//! Cycle counts of many lots at once, of items that track no serial
//! numbers at nodes the tenant may use: nearly every row of an import (a
//! store's, a warehouse's or an ERP's whole stock). One by one each took
//! about ten round trips to Postgres; here a run of them takes a handful
//! in all. The rules are `movements::apply`'s (`movements::ruled`), and so
//! are the refusals. What reservations hold beyond the stock is read after
//! the run, once per node and SKU: a SKU's lots counted in one run have
//! one figure in their events, where one by one each lot's event gave it
//! before the next lot was counted.
use super::Inventory;
use super::movements::{Origin, Ruled, held_beyond, moved, promise, ruled};
use crate::error::{Error, Result};
use crate::repo;
use chrono::Utc;
use oms_kernel::Tenant;
use oms_proto::inventory::*;
use sqlx::PgConnection;
use std::collections::{BTreeMap, HashMap};

/// The nodes and items counts are recorded against.
pub(crate) struct Catalog {
    pub nodes: HashMap<String, Node>,
    pub items: HashMap<String, Item>,
}

/// Records `counts` (cycle-count movements, each lot once, of items and
/// nodes in `catalog`, none of a serial-tracked item) by `actor`, as
/// `movements::apply` would one by one. Returns, for each, `Ok` or why it
/// was refused, having changed nothing.
pub(crate) async fn record(
    inv: &Inventory,
    tx: &mut PgConnection,
    tenant: &Tenant,
    catalog: &Catalog,
    counts: Vec<StockMovement>,
    actor: &str,
    request_id: &str,
) -> Result<Vec<Result<()>>> {
    let keys: Vec<(&str, &str, &str)> = (counts.iter())
        .map(|m| (m.node_id.as_str(), m.sku.as_str(), m.lot.as_str()))
        .collect();
    let locked = repo::stock::lock_lots(tx, tenant, &keys).await?;
    let now = Utc::now();
    let mut outcomes = Vec::with_capacity(counts.len());
    let mut recorded: Vec<Ruled> = vec![];
    let mut refused_made = vec![];
    for m in counts {
        let key = (m.node_id.clone(), m.sku.clone(), m.lot.clone());
        let lot = locked.lots.get(&key).cloned().unwrap_or_default();
        // Refused as `apply` refuses them, should a caller pass a count
        // whose node or item the catalog lacks.
        let ruling = match (catalog.nodes.get(&m.node_id), catalog.items.get(&m.sku)) {
            (Some(node), Some(item)) => ruled(node, item, &lot, m, Origin::Request, actor, now),
            (None, _) => Err(Error::not_found("node", format!("nodes/{}", m.node_id))),
            (_, None) => Err(Error::not_found("item", format!("items/{}", m.sku))),
        };
        match ruling {
            Ok(r) => {
                recorded.push(r);
                outcomes.push(Ok(()));
            }
            Err(e) => {
                if let Some(made) = locked.made.get(&key) {
                    refused_made.push(made);
                }
                outcomes.push(Err(e));
            }
        }
    }
    repo::stock::forget_lots(tx, tenant, &refused_made).await?;
    if recorded.is_empty() {
        return Ok(outcomes);
    }
    let rows: Vec<_> = recorded.iter().map(Ruled::recorded).collect();
    repo::stock::record(tx, tenant, &rows, now).await?;
    let changes = (recorded.iter())
        .filter(|r| (catalog.nodes.get(&r.movement.node_id)).is_some_and(|n| n.enabled))
        .map(|r| (r.movement.node_id.clone(), r.movement.sku.clone(), r.change))
        .collect();
    promise(inv, tx, tenant, changes).await?;
    // Promised units taken away may leave reservations without stock: read
    // once per node for its SKUs that lost some.
    let mut lowered: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for r in recorded.iter().filter(|r| r.change < 0) {
        let skus = lowered.entry(&r.movement.node_id).or_default();
        // A node's lots of one SKU follow each other.
        if skus.last() != Some(&r.movement.sku) {
            skus.push(r.movement.sku.clone());
        }
    }
    let mut held: HashMap<(&str, &str), i64> = HashMap::new();
    for (node, skus) in &lowered {
        let units = held_beyond(inv, tx, tenant, node, skus).await?;
        held.extend(
            skus.iter()
                .zip(units)
                .map(|(s, u)| ((*node, s.as_str()), u)),
        );
    }
    let events = (recorded.iter())
        .map(|r| {
            let m = &r.movement;
            let beyond = held.get(&(m.node_id.as_str(), m.sku.as_str()));
            // As one by one: a movement that took no promised units says 0.
            let beyond = if r.change < 0 { beyond.copied() } else { None };
            moved(m, beyond.unwrap_or(0))
        })
        .collect();
    super::emit_many(tx, tenant, request_id, events).await?;
    Ok(outcomes)
}
