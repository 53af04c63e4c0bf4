//! Tells inventory what each advance shipping notice still brings to its
//! node (SetExpectedInbound), so that availability shows the units by
//! their expected time (a restock date for a sold-out listing, a due time
//! for a backorder) without promising them. A notice's changes are counted
//! in its row (created, each receipt against it, its close); the poster
//! tells inventory the latest, with that count as the revision, so a
//! retry, a late call or two replicas never set an older figure over a
//! newer one. A transfer's notice is not told: the transfer's units in
//! transit are shown already.
use crate::posting::{BATCH, Poster};
use crate::repo::inbound as repo;
use chrono::Utc;
use oms_kernel::{RequestId, Tenant};
use oms_proto::fulfillment::{AdvanceShippingNotice, Receipt};
use oms_proto::inventory::{InboundLine, SetExpectedInboundRequest};
use std::collections::BTreeMap;
use tonic::Code;
use uuid::Uuid;

/// The source inventory keeps these figures under.
const SOURCE: &str = "fulfillment";

/// How long after inventory refused lines of an open notice (a SKU or node
/// it did not know) the notice is told again, in case they exist now.
const RETELL_AFTER: std::time::Duration = std::time::Duration::from_secs(600);

/// What a notice still brings per SKU: expected less arrived (good or
/// damaged: a damaged unit came, and will not come again), never below
/// zero; nothing once closed.
pub fn still_expected(asn: &AdvanceShippingNotice, receipts: &[Receipt]) -> Vec<InboundLine> {
    if asn.close_time.is_some() {
        return vec![];
    }
    let mut per: BTreeMap<&str, i64> = BTreeMap::new();
    for l in &asn.lines {
        *per.entry(l.sku.as_str()).or_default() += l.quantity;
    }
    for l in receipts.iter().flat_map(|r| &r.lines) {
        if let Some(units) = per.get_mut(l.sku.as_str()) {
            *units -= l.quantity + l.damaged;
        }
    }
    (per.into_iter())
        .filter(|(_, units)| *units > 0)
        .map(|(sku, units)| InboundLine {
            sku: sku.to_owned(),
            units,
        })
        .collect()
}

/// How telling inventory of one notice ended.
enum Told {
    /// Told; the lines it refused, with why.
    Done(Vec<String>),
    /// Nothing to tell (a transfer's notice, or one gone).
    Nothing,
    /// Try again later.
    Later(String),
}

impl Poster {
    /// Tells inventory of a batch of changed notices; true when a full
    /// batch moved (the next one is waiting).
    pub(crate) async fn post_expected_inbound(&self) -> bool {
        if let Err(e) = repo::retell_refused(&self.pool, RETELL_AFTER).await {
            tracing::warn!(error = %e, "could not mark refused notices to tell again");
        }
        let changed = match repo::inbound_to_post(&self.pool, BATCH).await {
            Ok(changed) => changed,
            Err(e) => {
                tracing::warn!(error = %e, "could not read notices to tell inventory of");
                return false;
            }
        };
        let full = changed.len() as i64 == BATCH;
        let mut settled = false;
        for (tenant, id, revision) in changed {
            let Ok(t) = Tenant::parse(&tenant) else {
                continue;
            };
            let (error, at) = match self.tell(&t, id, revision).await {
                Told::Done(refused) if refused.is_empty() => (None, Some(Utc::now())),
                Told::Done(refused) => (Some(refused.join("; ")), Some(Utc::now())),
                Told::Nothing => (None, None),
                Told::Later(why) => {
                    tracing::info!(asn = %id, %why, "expected inbound told to inventory later");
                    continue;
                }
            };
            let marked =
                repo::mark_inbound_posted(&self.pool, &t, (id, revision), error.as_deref(), at);
            match marked.await {
                Ok(()) => settled = true,
                Err(e) => {
                    tracing::warn!(error = %e, "could not mark a notice told; it is told again")
                }
            }
        }
        full && settled
    }

    /// Tells inventory what notice `id` brings as of now, under `revision`.
    /// A SKU inventory does not know is left out and named, so that it
    /// keeps no other line out of the figures; an unknown node keeps all.
    async fn tell(&self, tenant: &Tenant, id: Uuid, revision: i64) -> Told {
        let asn = match repo::asn(&self.pool, tenant, id, false).await {
            Ok(Some(asn)) if asn.transfer.is_empty() => asn,
            Ok(_) => return Told::Nothing,
            Err(e) => return Told::Later(e.to_string()),
        };
        let receipts = match repo::receipts_of(&self.pool, tenant, &[id]).await {
            Ok(mut r) => r.remove(&id).unwrap_or_default(),
            Err(e) => return Told::Later(e.to_string()),
        };
        // A receipt's units stop being expected only once they are on hand
        // (or refused for good): never counted neither way meanwhile.
        if receipts
            .iter()
            .any(|r| r.post_time.is_none() && r.post_error.is_empty())
        {
            return Told::Later("a receipt against it is not posted yet".into());
        }
        let mut lines = still_expected(&asn, &receipts);
        let mut refused = vec![];
        let mut inventory = self.inventory.client(tenant);
        loop {
            // Each attempt says something else: its own request id.
            let key = format!("{}:{revision}:{}", asn.name, refused.len());
            let req = SetExpectedInboundRequest {
                request_id: RequestId::derived("asn-inbound", key),
                source: SOURCE.into(),
                inbound_id: asn.name.clone(),
                node_id: asn.node_id.clone(),
                expected_arrival_time: asn.expected_time,
                lines: lines.clone(),
                revision,
            };
            let s = match inventory.set_expected_inbound(req).await {
                Ok(_) => return Told::Done(refused),
                Err(s) => s,
            };
            // Inventory names every unknown SKU (before 2026-12-05, only
            // the first: then one is dropped per call).
            let unknown: Vec<String> = (oms_runtime::status::resource_names(&s).iter())
                .filter_map(|name| name.strip_prefix("items/"))
                .filter(|sku| lines.iter().any(|l| l.sku == *sku))
                .map(str::to_owned)
                .collect();
            match (s.code(), unknown.is_empty()) {
                (Code::NotFound, false) => {
                    lines.retain(|l| !unknown.contains(&l.sku));
                    refused.extend(
                        unknown
                            .iter()
                            .map(|sku| format!("{sku}: items/{sku} not found")),
                    );
                }
                (
                    Code::InvalidArgument
                    | Code::NotFound
                    | Code::FailedPrecondition
                    | Code::PermissionDenied,
                    _,
                ) => {
                    refused.push(format!("all lines: {}", s.message()));
                    return Told::Done(refused);
                }
                _ => return Told::Later(s.message().to_owned()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oms_proto::fulfillment::{ExpectedLine, ReceivedLine};

    #[test]
    fn what_a_notice_still_brings_is_expected_less_arrived() {
        let expect = |sku: &str, quantity| ExpectedLine {
            sku: sku.into(),
            quantity,
            lot: String::new(),
        };
        let mut asn = AdvanceShippingNotice {
            lines: vec![expect("A", 10), expect("B", 4), expect("A", 2)],
            ..Default::default()
        };
        let got = |l: ReceivedLine| Receipt {
            lines: vec![l],
            ..Default::default()
        };
        let arrived = |sku: &str, quantity, damaged| ReceivedLine {
            sku: sku.into(),
            quantity,
            damaged,
            ..Default::default()
        };
        let receipts = [
            got(arrived("A", 6, 1)),
            got(arrived("B", 5, 0)),
            got(arrived("C", 3, 0)),
        ];
        let lines: Vec<(String, i64)> = (still_expected(&asn, &receipts).into_iter())
            .map(|l| (l.sku, l.units))
            .collect();
        // A: 12 expected, 7 came; B came over; C was never expected.
        assert_eq!(lines, [("A".to_string(), 5)]);
        asn.close_time = Some(prost_types::Timestamp::default());
        assert!(still_expected(&asn, &[]).is_empty(), "closed");
    }
}
