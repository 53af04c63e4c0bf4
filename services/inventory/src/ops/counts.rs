//! Cycle counts of many plain lots at once: the lot of an item that
//! tracks no lots, expiry or serial numbers, at a node the tenant may use.
//! Most of an import's rows are such counts (a store's or an ERP's whole
//! stock), and one by one each took about ten round trips to Postgres;
//! here a run of them takes a handful in all. The rules are
//! `movements::apply`'s for a count (and use its pieces); a lot that turns
//! out to carry dates (left by an earlier tracking of the item) is left to
//! `apply`.
use super::Inventory;
use super::movements::{held_beyond, moved, promise, stamp};
use crate::error::Result;
use crate::repo;
use chrono::Utc;
use oms_kernel::Tenant;
use oms_proto::inventory::*;
use sqlx::PgConnection;
use std::collections::{BTreeMap, HashMap};

/// A count of a plain lot.
pub(crate) struct Count<'a> {
    pub node: &'a str,
    /// Whether the node is enabled (its stock is promised).
    pub enabled: bool,
    pub sku: &'a str,
    pub counted: i64,
}

/// Records `counts` (each lot once), as `movements::apply` records a
/// count `like` (reason, time) with each count's node, SKU and figure.
/// Returns, for each count, whether it was recorded here: one whose lot
/// carries dates is not, and is to be applied on its own.
pub(crate) async fn record(
    inv: &Inventory,
    tx: &mut PgConnection,
    tenant: &Tenant,
    counts: &[Count<'_>],
    like: &StockMovement,
    actor: &str,
    request_id: &str,
) -> Result<Vec<bool>> {
    let keys: Vec<(&str, &str, &str)> = counts.iter().map(|c| (c.node, c.sku, "")).collect();
    let lots = repo::stock::lock_lots(tx, tenant, &keys).await?;
    let now = Utc::now();
    let mut done = Vec::with_capacity(counts.len());
    let mut recorded = vec![];
    for c in counts {
        let lot = lots
            .get(&(c.node.to_owned(), c.sku.to_owned(), String::new()))
            .cloned()
            .unwrap_or_default();
        let plain = lot.expiry_date.is_empty() && !lot.expired;
        done.push(plain);
        if !plain {
            continue;
        }
        let mut m = StockMovement {
            kind: MovementKind::CycleCount as i32,
            node_id: c.node.to_owned(),
            sku: c.sku.to_owned(),
            counted_quantity: c.counted,
            ..like.clone()
        };
        let id = stamp(&mut m, lot.on_hand, c.counted - lot.on_hand, actor, now);
        recorded.push((m, id, c.enabled));
    }
    if recorded.is_empty() {
        return Ok(done);
    }
    let rows: Vec<_> = (recorded.iter())
        .map(|(m, id, _)| repo::stock::Recorded {
            movement: m,
            id: *id,
            withdraw_date: "",
            expired: false,
        })
        .collect();
    repo::stock::record(tx, tenant, &rows, now).await?;
    // A plain lot is never expired: what its node can promise moves with
    // its units.
    let changes = (recorded.iter())
        .filter(|(_, _, enabled)| *enabled)
        .map(|(m, _, _)| (m.node_id.clone(), m.sku.clone(), m.quantity))
        .collect();
    promise(inv, tx, tenant, changes).await?;
    // Units taken away may leave reservations without stock: read once per
    // node for its SKUs that lost units.
    let mut lowered: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (m, _, _) in recorded.iter().filter(|(m, _, _)| m.quantity < 0) {
        lowered.entry(&m.node_id).or_default().push(m.sku.clone());
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
        .map(|(m, _, _)| {
            let beyond = held.get(&(m.node_id.as_str(), m.sku.as_str()));
            moved(m, beyond.copied().unwrap_or(0))
        })
        .collect();
    super::emit_many(tx, tenant, request_id, events).await?;
    Ok(done)
}
