//! Lots whose withdraw date comes (their expiry date less their item's
//! minimum shelf life, at the start of that date in their node's time
//! zone): the sweep takes their units out of availability, record and
//! gate in one change per tenant, as any other change that takes stock
//! away. On-hand stays: the units are there until shipped, damaged or
//! counted away.
use super::availability::stock_and_holds;
use super::{Inventory, commit, distinct, emit};
use crate::domain::{availability::Figures, expiry};
use crate::error::Result;
use crate::gate::AvailChange;
use crate::repo::{self, lock};
use chrono::Utc;
use oms_kernel::Tenant;
use oms_proto::inventory::{
    Allocation, Item, LotExpired, LotRestored, Reservation, StockLevel, inventory_event,
};
use sqlx::PgConnection;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Lots marked expired per transaction at most.
const LOTS_PER_CHANGE: i64 = 1000;

/// Marks the lots whose withdraw date has come at their node: every sweep, on every
/// replica (a lot another replica marked first is skipped).
pub async fn expire_due_lots(inv: &Inventory) {
    let now = Utc::now();
    let dated = match repo::stock::dated_up_to(&inv.pool, &expiry::latest_due(now)).await {
        Ok(d) if d.is_empty() => return,
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "the sweep cannot read lots near their expiry");
            return;
        }
    };
    let nodes: Vec<String> = distinct(dated.iter().map(|(_, n, _)| n));
    let zones = match repo::nodes::zones(&inv.pool, &nodes).await {
        Ok(z) => z,
        Err(e) => {
            tracing::warn!(error = %e, "the sweep cannot read the nodes' time zones");
            return;
        }
    };
    let mut due: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for (tenant, node, date) in dated {
        let zone = zones.get(&node).map(String::as_str).unwrap_or("");
        if expiry::is_expired(&date, zone, now) {
            due.entry(tenant).or_default().push((node, date));
        }
    }
    for (tenant, due) in due {
        let Ok(tenant) = Tenant::parse(&tenant) else {
            continue;
        };
        loop {
            let marked = inv
                .retrying(&tenant, || expire_lots(inv, &tenant, &due))
                .await;
            match marked {
                Ok(n) if n as i64 == LOTS_PER_CHANGE => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, tenant = %tenant, "expiring lots failed; retried next sweep");
                    break;
                }
            }
        }
    }
}

/// One change: marks up to [`LOTS_PER_CHANGE`] of the tenant's lots dated
/// as `due` says (node, withdraw date) expired; see [`withdrawn`].
async fn expire_lots(inv: &Inventory, tenant: &Tenant, due: &[(String, String)]) -> Result<usize> {
    let mut tx = inv.pool.begin().await?;
    lock::shared(&mut tx, tenant).await?;
    let lots = repo::stock::mark_expired(&mut tx, tenant, due, LOTS_PER_CHANGE).await?;
    if lots.is_empty() {
        return Ok(0);
    }
    withdrawn(inv, &mut tx, tenant, &lots, "").await?;
    commit(tx).await?;
    let units: i64 = lots.iter().map(|l| l.on_hand).sum();
    tracing::info!(tenant = %tenant, lots = lots.len(), units, "lots past their withdraw date left availability");
    Ok(lots.len())
}

/// Restates the withdraw date of every dated lot of an item whose minimum
/// shelf life changed (in the update's transaction, the item locked): lots
/// it brings past their date leave availability, lots it brings back
/// before it are promised again.
pub async fn restate_item(
    inv: &Inventory,
    tx: &mut PgConnection,
    tenant: &Tenant,
    item: &Item,
    request_id: &str,
) -> Result<()> {
    let lots = repo::stock::dated_lots(tx, tenant, &item.sku).await?;
    let node_ids = distinct(lots.iter().map(|l| &l.node_id));
    let zones = repo::nodes::zones(&mut *tx, &node_ids).await?;
    let now = Utc::now();
    let (mut restated, mut flipped) = (Vec::new(), Vec::new());
    for mut l in lots {
        let date = expiry::withdraw_date(&l.lot, &l.expiry_date, item.min_shelf_life_days);
        let zone = zones.get(&l.node_id).map(String::as_str).unwrap_or("");
        let expired = expiry::is_expired(&date, zone, now);
        if date == l.withdraw_date && expired == l.expired {
            continue;
        }
        let flip = expired != l.expired;
        (l.withdraw_date, l.expired) = (date, expired);
        if flip {
            flipped.push(l.clone());
        }
        restated.push(l);
    }
    repo::stock::restate(tx, tenant, &restated).await?;
    withdrawn(inv, tx, tenant, &flipped, request_id).await
}

/// Lots whose state just changed (`expired`: now left out of availability;
/// otherwise promised again): what their nodes promise changes by their
/// units, and each gets a `LotExpired` or `LotRestored` event.
async fn withdrawn(
    inv: &Inventory,
    tx: &mut PgConnection,
    tenant: &Tenant,
    lots: &[StockLevel],
    request_id: &str,
) -> Result<()> {
    let node_ids: Vec<String> = distinct(lots.iter().map(|l| &l.node_id));
    let enabled = repo::nodes::visible(&mut *tx, tenant, &node_ids).await?;
    let skus: Vec<String> = distinct(lots.iter().map(|l| &l.sku));
    let safety = repo::rules::safety(&mut *tx, tenant, &skus).await?;
    let changes: Vec<AvailChange> = lots
        .iter()
        .filter(|l| l.on_hand != 0 && enabled.get(&l.node_id) == Some(&true))
        .map(|l| {
            let delta = if l.expired { -l.on_hand } else { l.on_hand };
            let init = -repo::rules::effective(&safety, &l.node_id, &l.sku);
            AvailChange::stock(&l.sku, &l.node_id, delta, init)
        })
        .collect();
    super::adjust_gate(inv, tenant, changes).await?;
    let now = if lots.iter().any(|l| l.expired) {
        // Lots of one node (a sweep's, by node and date): its figures only.
        let node = match node_ids.as_slice() {
            [one] => Some(one.as_str()),
            _ => None,
        };
        stock_and_holds(tx, tenant, &skus, node).await?
    } else {
        Figures::default()
    };
    for l in lots {
        let (node_id, sku, lot) = (l.node_id.clone(), l.sku.clone(), l.lot.clone());
        let (expiry_date, withdraw_date, on_hand) =
            (l.expiry_date.clone(), l.withdraw_date.clone(), l.on_hand);
        let kind = if l.expired {
            let held_beyond_stock = held_beyond_stock(inv, &now, tenant, &l.node_id, &l.sku);
            inventory_event::Kind::LotExpired(LotExpired {
                node_id,
                sku,
                lot,
                expiry_date,
                on_hand,
                withdraw_date,
                held_beyond_stock,
            })
        } else {
            inventory_event::Kind::LotRestored(LotRestored {
                node_id,
                sku,
                lot,
                expiry_date,
                on_hand,
                withdraw_date,
            })
        };
        let subject = format!("nodes/{}/items/{}", l.node_id, l.sku);
        emit(tx, tenant, &subject, request_id, kind).await?;
    }
    Ok(())
}

/// For allocations at `entries` (SKU, node): the earliest expiry date a
/// lot may have to ship each one whose item tracks expiry (the lots its
/// node still promises today), by (SKU, node).
async fn min_expiry_dates(
    tx: &mut PgConnection,
    tenant: &Tenant,
    entries: &[(String, String)],
) -> Result<HashMap<(String, String), String>> {
    let skus: Vec<String> = entries.iter().map(|(s, _)| s.clone()).collect();
    let items = repo::items::existing(&mut *tx, tenant, &skus).await?;
    let dated: Vec<&(String, String)> = entries
        .iter()
        .filter(|(s, _)| items.get(s).is_some_and(|i| i.expiry_tracked))
        .collect();
    if dated.is_empty() {
        return Ok(HashMap::new());
    }
    let node_ids = distinct(dated.iter().map(|(_, n)| n));
    let zones = repo::nodes::zones(&mut *tx, &node_ids).await?;
    let now = Utc::now();
    Ok(dated
        .into_iter()
        .map(|(sku, node)| {
            let zone = zones.get(node).map(String::as_str).unwrap_or("");
            let days = items[sku].min_shelf_life_days;
            let date = expiry::min_expiry_date(zone, now, days);
            ((sku.clone(), node.clone()), date)
        })
        .collect())
}

/// Sets `min_expiry_date` on the allocations of `reservations` that have
/// units left to ship, as of now: at confirmation, at each shipment, and
/// on every read, so an order released days after its confirmation does
/// not ship lots withdrawn from sale since. Allocations shipped in full
/// keep the date of their last shipment.
pub async fn date_allocations(
    c: &mut PgConnection,
    tenant: &Tenant,
    reservations: &mut [Reservation],
) -> Result<()> {
    let open = |a: &Allocation| a.quantity > a.quantity_consumed;
    let at: Vec<(String, String)> = reservations
        .iter()
        .flat_map(|r| &r.lines)
        .flat_map(|l| &l.allocations)
        .filter(|a| open(a))
        .map(|a| (a.sku.clone(), a.node_id.clone()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if at.is_empty() {
        return Ok(());
    }
    let fresh = min_expiry_dates(c, tenant, &at).await?;
    for a in reservations
        .iter_mut()
        .flat_map(|r| &mut r.lines)
        .flat_map(|l| &mut l.allocations)
        .filter(|a| open(a))
    {
        let key = (a.sku.clone(), a.node_id.clone());
        a.min_expiry_date = fresh.get(&key).cloned().unwrap_or_default();
    }
    Ok(())
}

/// Units reservations hold at a node beyond its unexpired stock, with a
/// warning in the log and a count in the metrics when there are any: those
/// reservations rest on stock that is not there to ship.
pub(crate) fn held_beyond_stock(
    inv: &Inventory,
    f: &Figures,
    tenant: &Tenant,
    node: &str,
    sku: &str,
) -> i64 {
    let units = f.held_beyond_stock(node, sku);
    if units > 0 {
        tracing::warn!(tenant = %tenant, node, sku, units,
            "reservations hold more than the node's unexpired stock");
    }
    inv.metrics.held_beyond_stock(tenant.as_str(), node, units);
    units
}
