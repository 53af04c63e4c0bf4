//! SetBackorderDemand: what orders waiting for stock ask for, which
//! published availability keeps for them. Orders owns its backorders; it
//! says what they ask for here because availability is computed here, and
//! a channel that published the units they wait for would sell them again.
use super::{Begin, Inventory, emit};
use crate::domain::{check_sku, movement::MAX_UNITS};
use crate::error::Result;
use crate::repo;
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
    let name = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if req.source.is_empty() || req.source.len() > 64 || !req.source.chars().all(name) {
        v.add("source", "1 to 64 letters, digits, '-' or '_'");
    }
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
        let mut stored = repo::backorders::set(&mut tx, tenant, by, &req.demand).await?;
        if req.complete {
            stored.extend(repo::backorders::zero_the_rest(&mut tx, tenant, by).await?);
            stored.sort_by(|a, b| (&a.sku, &a.channel).cmp(&(&b.sku, &b.channel)));
        }
        let mut skus: Vec<String> = stored.iter().map(|f| f.sku.clone()).collect();
        skus.dedup();
        if !stored.is_empty() {
            // The gate is untouched: a backorder reserves like any order,
            // and orders keeps its line among its own.
            let set = BackorderDemandSet {
                demand: stored,
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
