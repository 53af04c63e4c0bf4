//! Inbound goods: advance shipping notices (what a node expects), receipts
//! reported by its adapter (what arrived, good and damaged), and the
//! discrepancies between the two. A notice is sent to its node's adapter
//! as a command; a receipt is applied once by its event id like a status
//! event, and its good units are posted to the inventory ledger by
//! `posting`.
use crate::events::{self, Once};
use crate::repo::{self as commands, inbound as repo};
use crate::service::{DOMAIN, Fulfillment, db, emit_about, invalid};
use chrono::{SubsecRound, Utc};
use oms_kernel::{Paging, RequestId, Tenant, Violations, parse_name, parse_uuid_name};
use oms_proto::fulfillment::{
    AdvanceShippingNotice, CloseAdvanceShippingNoticeRequest, CloseAdvanceShippingNoticeResponse,
    CreateAdvanceShippingNoticeRequest, CreateAdvanceShippingNoticeResponse, Discrepancy, EventAck,
    ExpectedLine, GetAdvanceShippingNoticeRequest, GetAdvanceShippingNoticeResponse,
    ListAdvanceShippingNoticesRequest, ListAdvanceShippingNoticesResponse, Receipt,
    ReceiptRecorded, ReceiptReported, command, watch_fulfillment_events_response::Kind,
};
use oms_proto::inventory as inv;
use oms_runtime::{
    idempotency::{self, Begin},
    status,
    time::to_timestamp,
};
use std::collections::BTreeMap;
use tonic::Status;
use uuid::Uuid;

const MAX_LINES: usize = 1000;
/// Most units of a line: what inventory takes in one movement (sums of
/// lines stay far from overflowing).
const MAX_UNITS: i64 = 1_000_000_000;

pub fn asn_id(field: &str, name: &str) -> Result<Uuid, Violations> {
    parse_uuid_name(name, "asns", "an ASN").map_err(|e| Violations::one(field, e))
}

fn check_asn(a: &AdvanceShippingNotice) -> Violations {
    let mut v = Violations::new();
    v.check("asn.node_id", oms_kernel::check_id(&a.node_id));
    if a.reference.len() > 200 {
        v.add("asn.reference", "at most 200 characters");
    }
    // A transfer's notice expects what the transfer has on the way.
    if a.lines.is_empty() && a.transfer.is_empty() {
        v.add("asn.lines", "at least one line is required");
    }
    if !a.transfer.is_empty() {
        v.check("asn.transfer", parse_name(&a.transfer, "transfers"));
    }
    if a.lines.len() > MAX_LINES {
        v.add("asn.lines", format!("at most {MAX_LINES} lines"));
    }
    for (i, l) in a.lines.iter().enumerate() {
        // Inventory's rule: its receipt is recorded there.
        v.check(format!("asn.lines[{i}].sku"), oms_kernel::check_sku(&l.sku));
        // Inventory's rule too: the lot is named on the receipt.
        if !l.lot.is_empty() {
            let label = oms_kernel::check_label(&l.lot);
            v.check(format!("asn.lines[{i}].lot"), label);
        }
        if l.quantity <= 0 {
            v.add(format!("asn.lines[{i}].quantity"), "must be positive");
        } else if l.quantity > MAX_UNITS {
            v.add(
                format!("asn.lines[{i}].quantity"),
                format!("must be at most {MAX_UNITS}"),
            );
        }
    }
    v
}

pub async fn create(
    r: &Fulfillment,
    tenant: &Tenant,
    req: CreateAdvanceShippingNoticeRequest,
) -> Result<CreateAdvanceShippingNoticeResponse, Status> {
    let mut v = Violations::new();
    let rid = v.check("request_id", RequestId::parse(&req.request_id));
    let mut asn = req.asn.clone().unwrap_or_default();
    if req.asn.is_none() {
        v.add("asn", "required");
    } else {
        v.0.extend(check_asn(&asn).0);
    }
    let (Some(rid), true) = (rid, v.is_empty()) else {
        return Err(invalid(v));
    };
    let mut tx = match idempotency::begin(
        &r.pool,
        DOMAIN,
        tenant,
        &rid,
        "CreateAdvanceShippingNotice",
        &req,
    )
    .await?
    {
        Begin::Replay(resp) => return Ok(resp),
        Begin::Tx(tx) => tx,
    };
    if !asn.transfer.is_empty() {
        expect_transfer(r, tenant, &mut asn).await?;
    }
    let now = Utc::now();
    let id = Uuid::now_v7();
    asn.name = format!("asns/{id}");
    asn.asn_id = id.to_string();
    asn.receipts.clear();
    asn.discrepancies.clear();
    asn.create_time = Some(to_timestamp(now));
    repo::insert_asn(&mut tx, tenant, id, &asn, now)
        .await
        .map_err(db)?;
    // The node's adapter learns what to expect.
    let expect = command::Kind::Asn(asn.clone());
    commands::append_command(&mut tx, tenant, &asn.node_id, expect, now)
        .await
        .map_err(db)?;
    asn.discrepancies = discrepancies(&asn, &[]);
    let resp = CreateAdvanceShippingNoticeResponse { asn: Some(asn) };
    let resp = r.finish(tx, tenant, &rid, resp).await?;
    // Inventory is told what it brings.
    r.posting.notify_one();
    Ok(resp)
}

/// Closes an open notice: inventory is told that nothing more of it comes.
pub async fn close(
    r: &Fulfillment,
    tenant: &Tenant,
    req: CloseAdvanceShippingNoticeRequest,
) -> Result<CloseAdvanceShippingNoticeResponse, Status> {
    let mut v = Violations::new();
    let rid = v.check("request_id", RequestId::parse(&req.request_id));
    let id = asn_id("name", &req.name).map_err(|e| v.0.extend(e.0)).ok();
    let (Some(rid), Some(id), true) = (rid, id, v.is_empty()) else {
        return Err(invalid(v));
    };
    let mut tx = match idempotency::begin(
        &r.pool,
        DOMAIN,
        tenant,
        &rid,
        "CloseAdvanceShippingNotice",
        &req,
    )
    .await?
    {
        Begin::Replay(resp) => return Ok(resp),
        Begin::Tx(tx) => tx,
    };
    let Some(mut asn) = repo::asn(&mut *tx, tenant, id, true).await.map_err(db)? else {
        return Err(status::not_found(DOMAIN, "ASN", &req.name));
    };
    // As Postgres keeps it, so this answer and a later read agree.
    let now = Utc::now().trunc_subsecs(6);
    if !repo::close(&mut *tx, tenant, id, now).await.map_err(db)? {
        let why = format!("{} was closed already", asn.name);
        let closed = status::failed_precondition(DOMAIN, "ASN_CLOSED", &asn.name, &why);
        return Err(closed);
    }
    asn.close_time = Some(to_timestamp(now));
    let asn = complete(r, tenant, vec![(id, asn)]).await?.pop();
    let resp = CloseAdvanceShippingNoticeResponse { asn };
    let resp = r.finish(tx, tenant, &rid, resp).await?;
    r.posting.notify_one();
    Ok(resp)
}

/// Checks a notice's transfer with inventory: it must be on its way to
/// the notice's node, or back from it (a notice at the sending node
/// announces units coming back). A notice without lines expects what the
/// transfer has on the way.
async fn expect_transfer(
    r: &Fulfillment,
    tenant: &Tenant,
    asn: &mut AdvanceShippingNotice,
) -> Result<(), Status> {
    let req = inv::GetTransferRequest {
        name: asn.transfer.clone(),
    };
    let t = match r.inventory.client(tenant).get_transfer(req).await {
        Ok(got) => got.into_inner().transfer.unwrap_or_default(),
        Err(s) if status::is_server_failure(s.code()) => {
            return Err(status::unavailable(DOMAIN, "inventory", &s));
        }
        // Refused (not found, a name inventory does not take): the field
        // is wrong, as inventory says.
        Err(s) => return Err(invalid(Violations::one("asn.transfer", s.message()))),
    };
    let mut v = Violations::new();
    // At the receiving node, or back at the sending one (a return).
    if t.to_node_id != asn.node_id && t.from_node_id != asn.node_id {
        let goes = format!(
            "{} goes to nodes/{} (or back to nodes/{})",
            t.name, t.to_node_id, t.from_node_id
        );
        v.add("asn.node_id", goes);
    }
    if t.state != inv::TransferState::InTransit as i32 {
        v.add("asn.transfer", format!("{} has nothing on the way", t.name));
    }
    if !v.is_empty() {
        return Err(invalid(v));
    }
    if asn.lines.is_empty() {
        asn.lines = t
            .lines
            .iter()
            .filter(|l| l.in_transit > 0)
            .map(|l| ExpectedLine {
                sku: l.sku.clone(),
                quantity: l.in_transit,
                lot: l.lot.clone(),
            })
            .collect();
    }
    Ok(())
}

/// The notices with their receipts and discrepancies as of now (one query
/// for all of them).
async fn complete(
    r: &Fulfillment,
    tenant: &Tenant,
    asns: Vec<(Uuid, AdvanceShippingNotice)>,
) -> Result<Vec<AdvanceShippingNotice>, Status> {
    let ids: Vec<Uuid> = asns.iter().map(|(id, _)| *id).collect();
    let mut receipts = repo::receipts_of(&r.pool, tenant, &ids).await.map_err(db)?;
    Ok(asns
        .into_iter()
        .map(|(id, mut asn)| {
            asn.receipts = receipts.remove(&id).unwrap_or_default();
            asn.discrepancies = discrepancies(&asn, &asn.receipts);
            asn
        })
        .collect())
}

pub async fn get(
    r: &Fulfillment,
    tenant: &Tenant,
    req: GetAdvanceShippingNoticeRequest,
) -> Result<GetAdvanceShippingNoticeResponse, Status> {
    let id = asn_id("name", &req.name).map_err(invalid)?;
    let asn = repo::asn(&r.pool, tenant, id, false)
        .await
        .map_err(db)?
        .ok_or_else(|| status::not_found(DOMAIN, "ASN", &req.name))?;
    Ok(GetAdvanceShippingNoticeResponse {
        asn: complete(r, tenant, vec![(id, asn)]).await?.pop(),
    })
}

pub async fn list(
    r: &Fulfillment,
    tenant: &Tenant,
    req: ListAdvanceShippingNoticesRequest,
) -> Result<ListAdvanceShippingNoticesResponse, Status> {
    let mut v = Violations::new();
    let hash = oms_kernel::fingerprint(&ListAdvanceShippingNoticesRequest {
        page_size: 0,
        page_token: String::new(),
        ..req.clone()
    });
    let paging = Paging::<Uuid>::parse(&mut v, req.page_size, &req.page_token, (50, 500), hash);
    if !v.is_empty() {
        return Err(invalid(v));
    }
    let rows = repo::list_asns(&r.pool, tenant, &req.node_id, paging.after, paging.fetch())
        .await
        .map_err(db)?;
    let (page, next_page_token) = paging.page(rows, |(id, _)| *id);
    Ok(ListAdvanceShippingNoticesResponse {
        asns: complete(r, tenant, page).await?,
        next_page_token,
    })
}

/// Expected against received per SKU and lot, for every SKU that differs
/// (short, over, damaged or not expected at all).
pub fn discrepancies(asn: &AdvanceShippingNotice, receipts: &[Receipt]) -> Vec<Discrepancy> {
    let mut per: BTreeMap<&str, Discrepancy> = BTreeMap::new();
    for l in &asn.lines {
        per.entry(l.sku.as_str())
            .or_insert_with(|| Discrepancy {
                sku: l.sku.clone(),
                ..Default::default()
            })
            .expected += l.quantity;
    }
    for l in receipts.iter().flat_map(|r| &r.lines) {
        let d = per.entry(l.sku.as_str()).or_insert_with(|| Discrepancy {
            sku: l.sku.clone(),
            ..Default::default()
        });
        d.received += l.quantity;
        d.damaged += l.damaged;
    }
    per.into_values()
        .filter(|d| d.received != d.expected || d.damaged > 0)
        .collect()
}

fn check_receipt(rc: &Receipt, nodes: &[String]) -> Result<(), String> {
    if !nodes.contains(&rc.node_id) {
        return Err(format!(
            "node {:?} is not served by this adapter (it said it serves {})",
            rc.node_id,
            nodes.join(", ")
        ));
    }
    if rc.lines.is_empty() || rc.lines.len() > MAX_LINES {
        return Err(format!("a receipt has 1 to {MAX_LINES} lines"));
    }
    for (i, l) in rc.lines.iter().enumerate() {
        if l.sku.trim().is_empty() {
            return Err(format!("receipt.lines[{i}].sku is required"));
        }
        let units = 0..=MAX_UNITS;
        if !units.contains(&l.quantity)
            || !units.contains(&l.damaged)
            || l.quantity + l.damaged == 0
        {
            return Err(format!(
                "receipt.lines[{i}]: quantity and damaged are 0 to {MAX_UNITS}, not both zero"
            ));
        }
    }
    // Inventory's rule: it records the receipt as of this time.
    let received = oms_runtime::time::check_happened(rc.receive_time.as_ref(), chrono::Utc::now());
    received.map_err(|e| format!("receive_time: {e}"))?;
    if rc.receipt_id.len() > 200 {
        return Err("receipt_id is at most 200 characters".into());
    }
    Ok(())
}

/// Applies a receipt reported by an adapter serving `nodes`, once per event
/// id (a resent receipt gets its first answer). Err only when the database
/// fails.
pub async fn receive(
    r: &Fulfillment,
    tenant: &Tenant,
    nodes: &[String],
    rr: ReceiptReported,
) -> Result<EventAck, Status> {
    let mut tx = match events::once(r, tenant, &rr.event_id).await? {
        Once::Answered(ack) => return Ok(ack),
        Once::Apply(tx) => tx,
    };
    let outcome = match rr.receipt {
        None => Err("the receipt is missing".to_string()),
        Some(mut rc) => match check_receipt(&rc, nodes) {
            Err(e) => Err(e),
            Ok(()) => {
                if rc.receipt_id.is_empty() {
                    rc.receipt_id = rr.event_id.clone();
                }
                rc.post_time = None;
                rc.post_error.clear();
                record(&mut tx, tenant, rc, &rr.event_id, Utc::now()).await?
            }
        },
    };
    let ack = events::answer(tx, tenant, events::answer_of(&rr.event_id, outcome)).await?;
    if ack.accepted {
        r.waker.wake();
        r.posting.notify_one();
    }
    Ok(ack)
}

/// Stores a checked receipt and its feed event; Ok(Err) says why it is
/// refused.
async fn record(
    tx: &mut sqlx::PgConnection,
    tenant: &Tenant,
    rc: Receipt,
    eid: &str,
    now: chrono::DateTime<Utc>,
) -> Result<Result<(), String>, Status> {
    let asn = if rc.asn.is_empty() {
        None
    } else {
        let Ok(id) = asn_id("receipt.asn", &rc.asn) else {
            return Ok(Err(format!("{:?} is not an ASN name", rc.asn)));
        };
        match repo::asn(&mut *tx, tenant, id, true).await.map_err(db)? {
            None => return Ok(Err(format!("unknown ASN {:?}", rc.asn))),
            Some(a) if a.node_id != rc.node_id => {
                return Ok(Err(format!(
                    "{} is expected at node {}, not {}",
                    a.name, a.node_id, rc.node_id
                )));
            }
            Some(a) => Some((id, a)),
        }
    };
    if !repo::insert_receipt(&mut *tx, tenant, asn.as_ref().map(|a| a.0), &rc, now)
        .await
        .map_err(db)?
    {
        return Ok(Err(format!(
            "receipt {:?} was already reported",
            rc.receipt_id
        )));
    }
    let (subject, discrepancies) = match &asn {
        Some((id, a)) => {
            // What it still brings changed: inventory is told again.
            repo::bump_inbound(&mut *tx, tenant, *id)
                .await
                .map_err(db)?;
            let mut receipts = repo::receipts_of(&mut *tx, tenant, &[*id])
                .await
                .map_err(db)?;
            let receipts = receipts.remove(id).unwrap_or_default();
            (a.name.clone(), discrepancies(a, &receipts))
        }
        None => (format!("receipts/{}", rc.receipt_id), Vec::new()),
    };
    emit_about(
        tx,
        tenant,
        &subject,
        eid,
        Kind::ReceiptRecorded(ReceiptRecorded {
            receipt: Some(rc),
            discrepancies,
        }),
    )
    .await?;
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oms_proto::fulfillment::{ExpectedLine, ReceivedLine};

    fn line(sku: &str, quantity: i64, damaged: i64) -> ReceivedLine {
        ReceivedLine {
            sku: sku.into(),
            quantity,
            damaged,
            ..Default::default()
        }
    }

    #[test]
    fn discrepancies_name_short_over_damaged_and_unexpected_skus() {
        let asn = AdvanceShippingNotice {
            lines: ["A", "B", "C", "A"]
                .iter()
                .map(|s| ExpectedLine {
                    sku: (*s).into(),
                    quantity: 10,
                    lot: String::new(),
                })
                .collect(),
            ..Default::default()
        };
        let receipts = [
            Receipt {
                lines: vec![line("A", 15, 0), line("B", 10, 0)],
                ..Default::default()
            },
            Receipt {
                lines: vec![line("A", 5, 0), line("C", 8, 2), line("D", 1, 0)],
                ..Default::default()
            },
        ];
        let got: Vec<(String, i64, i64, i64)> = discrepancies(&asn, &receipts)
            .into_iter()
            .map(|d| (d.sku, d.expected, d.received, d.damaged))
            .collect();
        // A: 20 expected, 20 received: no discrepancy. B matches too.
        assert_eq!(
            got,
            [("C".into(), 10, 8, 2), ("D".into(), 0, 1, 0)],
            "{got:?}"
        );
        // Nothing received yet: every line is short.
        assert_eq!(discrepancies(&asn, &[]).len(), 3);
    }

    #[test]
    fn lines_beyond_a_movement_are_refused_without_overflowing() {
        let asn = AdvanceShippingNotice {
            node_id: "DC1".into(),
            lines: vec![ExpectedLine {
                sku: "A".into(),
                quantity: i64::MAX,
                ..Default::default()
            }],
            ..Default::default()
        };
        let fields: Vec<String> = check_asn(&asn).0.into_iter().map(|v| v.field).collect();
        assert_eq!(fields, ["asn.lines[0].quantity"]);
        let receipt = |l: ReceivedLine| Receipt {
            receipt_id: "r1".into(),
            node_id: "DC1".into(),
            lines: vec![l],
            ..Default::default()
        };
        let nodes = ["DC1".to_string()];
        assert!(check_receipt(&receipt(line("A", 5, 1)), &nodes).is_ok());
        // Their sum overflowed before it was compared.
        let err = check_receipt(&receipt(line("A", i64::MAX, i64::MAX)), &nodes).unwrap_err();
        assert!(err.contains("0 to 1000000000"), "{err}");
    }
}
