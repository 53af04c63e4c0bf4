//! SetExpectedInbound and ListExpectedInbounds: what inbound deliveries
//! (suppliers' advance shipping notices) still bring to a node. The
//! fulfillment service owns its notices and their receipts; it says what
//! each still brings here because availability is computed here: a
//! sold-out listing's restock date, and a backorder's stock due time, come
//! mostly from supplier deliveries, not from transfers between nodes.
//! These units are shown, never promised: a delivery may come late, short
//! or not at all.
use super::{Begin, Inventory, emit};
use crate::domain::{check_node_id, check_sku, check_source, movement::MAX_UNITS};
use crate::error::{Error, Result};
use crate::repo::{self, lock};
use chrono::{SubsecRound, Utc};
use oms_kernel::{Paging, RequestId, Tenant, Violations};
use oms_proto::inventory::*;
use oms_runtime::time::from_timestamp;
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// Lines per delivery.
const MAX_LINES: usize = 1000;

fn check(req: &SetExpectedInboundRequest) -> Result<()> {
    let mut v = Violations::new();
    v.check("request_id", RequestId::parse(&req.request_id));
    v.check("source", check_source(&req.source));
    if req.inbound_id.is_empty() || req.inbound_id.len() > 200 {
        v.add("inbound_id", "1 to 200 characters");
    }
    v.check("node_id", check_node_id(&req.node_id));
    if let Some(t) = &req.expected_arrival_time
        && from_timestamp(t).is_none()
    {
        v.add("expected_arrival_time", "is not a valid timestamp");
    }
    if req.lines.len() > MAX_LINES {
        v.add("lines", format!("at most {MAX_LINES} lines"));
    }
    let mut seen = HashSet::new();
    for (i, l) in req.lines.iter().enumerate() {
        v.check(format!("lines[{i}].sku"), check_sku(&l.sku));
        if !(0..=MAX_UNITS).contains(&l.units) {
            v.add(
                format!("lines[{i}].units"),
                format!("must be 0 to {MAX_UNITS}"),
            );
        }
        if !seen.insert(&l.sku) {
            v.add(format!("lines[{i}].sku"), "names its SKU twice");
        }
    }
    if req.revision < 1 {
        v.add("revision", "must be 1 or more");
    }
    Ok(v.into_result(())?)
}

pub async fn set(
    inv: &Inventory,
    tenant: &Tenant,
    req: SetExpectedInboundRequest,
) -> Result<SetExpectedInboundResponse> {
    check(&req)?;
    let (mut tx, rid) = match inv
        .begin(tenant, &req.request_id, "SetExpectedInbound", &req)
        .await?
    {
        Begin::Replay(r) => return Ok(r),
        Begin::Tx(tx, rid) => (tx, rid),
    };
    lock::expected_inbound(&mut tx, tenant, &req.source, &req.inbound_id).await?;
    let before = repo::inbound::get(&mut tx, tenant, &req.source, &req.inbound_id).await?;
    if let Some(stored) = before.as_ref().filter(|b| b.revision >= req.revision) {
        // An older statement arriving late: the later one stands.
        let resp = SetExpectedInboundResponse {
            inbound: Some(stored.clone()),
            changed_skus: vec![],
        };
        return inv.finish(tx, tenant, &rid, resp).await;
    }
    let known = repo::nodes::visible(&mut *tx, tenant, std::slice::from_ref(&req.node_id)).await?;
    if known.is_empty() {
        return Err(Error::not_found("node", format!("nodes/{}", req.node_id)));
    }
    let mut lines: Vec<InboundLine> = req.lines.iter().filter(|l| l.units > 0).cloned().collect();
    lines.sort_by(|a, b| a.sku.cmp(&b.sku));
    let skus: Vec<String> = lines.iter().map(|l| l.sku.clone()).collect();
    let items = repo::items::existing(&mut *tx, tenant, &skus).await?;
    let missing: Vec<String> = (skus.iter())
        .filter(|s| !items.contains_key(*s))
        .map(|s| format!("items/{s}"))
        .collect();
    if !missing.is_empty() {
        return Err(Error::not_found_all("item", missing));
    }
    // As Postgres keeps it (microseconds), so the answer and a later list
    // say the same time.
    let now = Utc::now().trunc_subsecs(6);
    let after = ExpectedInbound {
        source: req.source.clone(),
        inbound_id: req.inbound_id.clone(),
        node_id: req.node_id.clone(),
        expected_arrival_time: req.expected_arrival_time,
        lines,
        revision: req.revision,
        update_time: Some(oms_runtime::time::to_timestamp(now)),
    };
    repo::inbound::put(&mut tx, tenant, &after, now).await?;
    let changed_skus = changed(before.as_ref(), &after);
    if !changed_skus.is_empty() {
        let previous_node_id = match &before {
            Some(b) if b.node_id != after.node_id => b.node_id.clone(),
            _ => String::new(),
        };
        let set = ExpectedInboundSet {
            inbound: Some(after.clone()),
            skus: changed_skus.clone(),
            previous_node_id,
        };
        let kind = inventory_event::Kind::ExpectedInboundSet(set);
        emit(&mut tx, tenant, "expected-inbound", rid.as_str(), kind).await?;
    }
    let resp = SetExpectedInboundResponse {
        inbound: Some(after),
        changed_skus,
    };
    inv.finish(tx, tenant, &rid, resp).await
}

/// The SKUs whose figures `after` changes against `before`: those whose
/// units differ, or, when the node or the time changed, all of both.
fn changed(before: Option<&ExpectedInbound>, after: &ExpectedInbound) -> Vec<String> {
    let units = |i: Option<&ExpectedInbound>| -> BTreeMap<String, i64> {
        (i.iter().flat_map(|i| i.lines.iter()))
            .map(|l| (l.sku.clone(), l.units))
            .collect()
    };
    let (was, now) = (units(before), units(Some(after)));
    let moved = before.is_some_and(|b| {
        b.node_id != after.node_id || b.expected_arrival_time != after.expected_arrival_time
    });
    let skus: BTreeSet<&String> = was.keys().chain(now.keys()).collect();
    skus.into_iter()
        .filter(|s| moved || was.get(*s) != now.get(*s))
        .cloned()
        .collect()
}

pub async fn list(
    inv: &Inventory,
    tenant: &Tenant,
    req: ListExpectedInboundsRequest,
) -> Result<ListExpectedInboundsResponse> {
    let mut v = Violations::new();
    if !req.sku.is_empty() {
        v.check("sku", check_sku(&req.sku));
    }
    if !req.node_id.is_empty() {
        v.check("node_id", check_node_id(&req.node_id));
    }
    let due_before = req.arrival_due_before.as_ref().map(from_timestamp);
    if due_before == Some(None) {
        v.add("arrival_due_before", "is not a valid timestamp");
    }
    let hash = oms_kernel::fingerprint(&ListExpectedInboundsRequest {
        page_size: 0,
        page_token: String::new(),
        ..req.clone()
    });
    let paging = Paging::<(String, String)>::parse(
        &mut v,
        req.page_size,
        &req.page_token,
        (100, 1000),
        hash,
    );
    v.into_result(())?;
    let mut db = inv.pool.acquire().await?;
    let filter = (req.sku.as_str(), req.node_id.as_str(), due_before.flatten());
    let rows = repo::inbound::list(
        &mut db,
        tenant,
        filter,
        paging.after.as_ref(),
        paging.fetch(),
    )
    .await?;
    let (inbounds, next_page_token) =
        paging.page(rows, |i| (i.source.clone(), i.inbound_id.clone()));
    Ok(ListExpectedInboundsResponse {
        inbounds,
        next_page_token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inbound(node: &str, lines: &[(&str, i64)]) -> ExpectedInbound {
        ExpectedInbound {
            node_id: node.into(),
            lines: (lines.iter())
                .map(|(s, u)| InboundLine {
                    sku: (*s).into(),
                    units: *u,
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn changed_names_skus_whose_units_differ_or_all_when_the_delivery_moved() {
        let was = inbound("A", &[("S1", 5), ("S2", 3)]);
        let now = inbound("A", &[("S1", 5), ("S3", 1)]);
        assert_eq!(changed(Some(&was), &now), ["S2", "S3"]);
        assert_eq!(changed(None, &now), ["S1", "S3"]);
        assert!(changed(Some(&now), &now).is_empty());
        let moved = inbound("B", &[("S1", 5), ("S3", 1)]);
        assert_eq!(changed(Some(&now), &moved), ["S1", "S3"]);
        let later = ExpectedInbound {
            expected_arrival_time: Some(prost_types::Timestamp::default()),
            ..now.clone()
        };
        assert_eq!(changed(Some(&was), &later), ["S1", "S2", "S3"]);
    }
}
