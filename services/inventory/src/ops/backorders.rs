//! SetBackorderDemand: what orders waiting for stock ask for, which
//! published availability and the reservation gate keep for them. Orders
//! owns its backorders; it says what they ask for here because
//! availability is computed and reservations granted here: a channel that
//! published the units they wait for, or a cart that took them, would sell
//! them again.
use super::{Begin, Inventory, emit};
use crate::domain::{check_sku, check_source, movement::MAX_UNITS};
use crate::error::Result;
use crate::gate::AvailChange;
use crate::repo::{self, backorders::Stored, lock};
use oms_kernel::{RequestId, Tenant, Violations, parse_name};
use oms_proto::inventory::*;
use std::collections::HashSet;

/// Figures per call.
const MAX_FIGURES: usize = 1000;

fn check(req: &SetBackorderDemandRequest) -> Result<()> {
    let mut v = Violations::new();
    v.check("request_id", RequestId::parse(&req.request_id));
    if (req.demand.is_empty() && !req.complete) || req.demand.len() > MAX_FIGURES {
        v.add(
            "demand",
            format!("1 to {MAX_FIGURES} figures (none only when complete)"),
        );
    }
    let mut seen = HashSet::new();
    for (i, f) in req.demand.iter().enumerate() {
        v.check(format!("demand[{i}].sku"), check_sku(&f.sku));
        if !f.channel.is_empty() {
            v.check(
                format!("demand[{i}].channel"),
                parse_name(&f.channel, "channels"),
            );
        }
        if !(0..=MAX_UNITS).contains(&f.units) {
            v.add(
                format!("demand[{i}].units"),
                format!("must be 0 to {MAX_UNITS}"),
            );
        }
        if !seen.insert((&f.sku, &f.channel)) {
            v.add(format!("demand[{i}]"), "names its sku and channel twice");
        }
    }
    if req.revision < 1 {
        v.add("revision", "must be 1 or more");
    }
    v.check("source", check_source(&req.source));
    Ok(v.into_result(())?)
}

pub async fn set(
    inv: &Inventory,
    tenant: &Tenant,
    req: SetBackorderDemandRequest,
) -> Result<SetBackorderDemandResponse> {
    check(&req)?;
    inv.retrying(tenant, || async {
        let (mut tx, rid) = match inv
            .begin(tenant, &req.request_id, "SetBackorderDemand", &req)
            .await?
        {
            Begin::Replay(r) => return Ok(r),
            Begin::Tx(tx, rid) => (tx, rid),
        };
        let by = (req.source.as_str(), req.revision);
        lock::backorder_demand(&mut tx, tenant, &req.source).await?;
        let mut stored = repo::backorders::set(&mut tx, tenant, by, &req.demand).await?;
        if req.complete {
            stored.extend(repo::backorders::zero_the_rest(&mut tx, tenant, by).await?);
            repo::backorders::sort(&mut stored);
        }
        keep_in_gate(inv, tenant, &req.source, &stored).await?;
        let demand: Vec<BackorderDemandFigure> = stored.into_iter().map(|s| s.figure).collect();
        let mut skus: Vec<String> = demand.iter().map(|f| f.sku.clone()).collect();
        skus.dedup();
        if !demand.is_empty() {
            let set = BackorderDemandSet {
                demand,
                revision: req.revision,
                skus: skus.clone(),
                source: req.source.clone(),
            };
            let kind = inventory_event::Kind::BackorderDemandSet(set);
            emit(&mut tx, tenant, "backorder-demand", rid.as_str(), kind).await?;
        }
        let resp = SetBackorderDemandResponse { changed_skus: skus };
        inv.finish(tx, tenant, &rid, resp).await
    })
    .await
}

/// Has the gate keep what `stored` changed for reservations not made for
/// `source`'s backorders: more demand at once, in the transaction (it
/// takes units away from them, as a hold does); less after the commit (it
/// gives units back, which the record must have first).
async fn keep_in_gate(
    inv: &Inventory,
    tenant: &Tenant,
    source: &str,
    stored: &[Stored],
) -> Result<()> {
    let (more, less): (Vec<_>, Vec<_>) = stored
        .iter()
        .filter(|s| s.figure.units != s.was)
        .map(|s| {
            let f = &s.figure;
            AvailChange::demand(&f.sku, source, &f.channel, f.units - s.was)
        })
        .partition(|c| c.delta > 0);
    if !more.is_empty() {
        super::changing_gate();
        inv.gate.adjust(tenant, &more).await?;
    }
    super::give_back_later(inv, tenant, less, None).await
}
