//! Transfers between nodes: at once (both movements in one transaction,
//! TransferStock), or in transit (SendTransfer records the transfer-outs
//! when the stock leaves, ReceiveTransfer a transfer-in for each delivery
//! that arrives), so that stock on a truck is promised by neither node.
use super::movements::{Applied, Origin, apply, nested};
use super::{Begin, Inventory, emit};
use crate::domain::{check_node_id, check_sku, movement};
use crate::error::{Error, Result};
use crate::repo;
use chrono::Utc;
use oms_kernel::{Paging, RequestId, Tenant, Violations, check_id, parse_name};
use oms_proto::inventory::*;
use oms_runtime::time::{check_happened, from_timestamp, to_timestamp};
use prost_types::Timestamp;
use sqlx::PgConnection;
use std::collections::HashSet;

/// Lines of a transfer, sent or received at once.
const MAX_LINES: usize = 200;

/// Checks the two nodes of a transfer.
fn check_nodes(v: &mut Violations, from: &str, to: &str) {
    v.check("from_node_id", check_node_id(from));
    v.check("to_node_id", check_node_id(to));
    // Two empty ids are "is required" each, not also the same node.
    if from == to && !to.is_empty() {
        v.add("to_node_id", "must differ from from_node_id");
    }
}

fn check_units(v: &mut Violations, field: String, q: i64) {
    if q <= 0 {
        v.add(field, "must be positive");
    } else if q > movement::MAX_UNITS {
        v.add(field, format!("must be at most {}", movement::MAX_UNITS));
    }
}

pub async fn transfer(
    inv: &Inventory,
    tenant: &Tenant,
    actor: &str,
    req: TransferStockRequest,
) -> Result<TransferStockResponse> {
    let mut v = Violations::new();
    v.check("request_id", RequestId::parse(&req.request_id));
    check_nodes(&mut v, &req.from_node_id, &req.to_node_id);
    v.check("sku", check_sku(&req.sku));
    check_units(&mut v, "quantity".into(), req.quantity);
    let now = Utc::now();
    v.check("occur_time", check_happened(req.occur_time.as_ref(), now));
    v.at_most("reason", &req.reason, 500);
    v.at_most("reference", &req.reference, 200);
    v.into_result(())?;
    // Both legs name the transfer: the caller's document, or the request
    // (before, `transfer:{from}->{to}`, which every transfer between the
    // two nodes shared).
    let reference = match req.reference.as_str() {
        "" => format!("stockTransfers/{}", req.request_id),
        given => given.to_owned(),
    };
    let side = |kind: MovementKind, node: &str, q: i64| StockMovement {
        kind: kind as i32,
        node_id: node.to_owned(),
        sku: req.sku.clone(),
        lot: req.lot.clone(),
        quantity: q,
        reason: req.reason.clone(),
        reference: reference.clone(),
        serial_numbers: req.serial_numbers.clone(),
        // One moment for both legs: left and arrived at once (each
        // recorded at its own time, a few ms apart, before 2026-12-04).
        occur_time: req.occur_time.or(Some(to_timestamp(now))),
        ..Default::default()
    };
    inv.retrying(tenant, || async {
        let (mut tx, rid) = match inv
            .begin(tenant, &req.request_id, "TransferStock", &req)
            .await?
        {
            Begin::Replay(r) => return Ok(r),
            Begin::Tx(tx, rid) => (tx, rid),
        };
        let lots = [
            (
                req.from_node_id.as_str(),
                req.sku.as_str(),
                req.lot.as_str(),
            ),
            (req.to_node_id.as_str(), req.sku.as_str(), req.lot.as_str()),
        ];
        repo::stock::lock_for_movements(&mut tx, tenant, &lots).await?;
        let out = apply(
            inv,
            &mut tx,
            tenant,
            side(MovementKind::TransferOut, &req.from_node_id, -req.quantity),
            actor,
            rid.as_str(),
            Origin::Request,
        )
        .await?;
        // The lot arrives with its expiry date.
        let arriving = StockMovement {
            expiry_date: out.movement.expiry_date.clone(),
            ..side(MovementKind::TransferIn, &req.to_node_id, req.quantity)
        };
        let inn = apply(
            inv,
            &mut tx,
            tenant,
            arriving,
            actor,
            rid.as_str(),
            Origin::Request,
        )
        .await?;
        let resp = TransferStockResponse {
            transfer_out: Some(out.movement),
            transfer_in: Some(inn.movement),
            held_beyond_stock: out.held_beyond_stock,
        };
        inv.finish(tx, tenant, &rid, resp).await
    })
    .await
}

/// Checks the lines of a send or a receipt: SKUs, units, serial numbers
/// given once, one line per SKU and lot.
fn check_lines(v: &mut Violations, lines: &[TransferLine]) {
    if lines.len() > MAX_LINES {
        v.add("lines", format!("at most {MAX_LINES} lines"));
    }
    let mut keys = HashSet::new();
    let mut serials = HashSet::new();
    for (i, l) in lines.iter().enumerate() {
        v.check(format!("lines[{i}].sku"), check_sku(&l.sku));
        check_units(v, format!("lines[{i}].quantity"), l.quantity);
        if !keys.insert((&l.sku, &l.lot)) {
            v.add(
                format!("lines[{i}]"),
                "repeats the SKU and lot of an earlier line",
            );
        }
        for (j, s) in l.serial_numbers.iter().enumerate() {
            if !serials.insert((&l.sku, s)) {
                v.add(format!("lines[{i}].serial_numbers[{j}]"), "given twice");
            }
        }
    }
}

/// Applies one movement of a transfer's line, its violations named by the
/// line (`lines[0].lot`).
#[allow(clippy::too_many_arguments)]
async fn move_line(
    inv: &Inventory,
    tx: &mut PgConnection,
    tenant: &Tenant,
    actor: &str,
    rid: &RequestId,
    i: usize,
    m: StockMovement,
) -> Result<Applied> {
    apply(inv, tx, tenant, m, actor, rid.as_str(), Origin::Request)
        .await
        .map_err(|e| nested(&format!("lines[{i}]"), e))
}

/// A movement of a transfer's line at `node`.
fn line_movement(
    kind: MovementKind,
    t: &Transfer,
    node: &str,
    l: &TransferLine,
    q: i64,
    occur_time: Option<Timestamp>,
) -> StockMovement {
    StockMovement {
        kind: kind as i32,
        node_id: node.to_owned(),
        sku: l.sku.clone(),
        lot: l.lot.clone(),
        expiry_date: l.expiry_date.clone(),
        quantity: q,
        reason: t.reason.clone(),
        reference: t.name.clone(),
        serial_numbers: l.serial_numbers.clone(),
        occur_time,
        ..Default::default()
    }
}

pub async fn send(
    inv: &Inventory,
    tenant: &Tenant,
    actor: &str,
    req: SendTransferRequest,
) -> Result<SendTransferResponse> {
    let mut v = Violations::new();
    v.check("request_id", RequestId::parse(&req.request_id));
    v.check("transfer_id", check_id(&req.transfer_id));
    check_nodes(&mut v, &req.from_node_id, &req.to_node_id);
    if req.lines.is_empty() {
        v.add("lines", "name at least one line");
    }
    check_lines(&mut v, &req.lines);
    let now = Utc::now();
    v.check("occur_time", check_happened(req.occur_time.as_ref(), now));
    if let Some(t) = &req.expected_arrival_time {
        let left = req.occur_time.as_ref().and_then(from_timestamp);
        v.check(
            "expected_arrival_time",
            check_arrival(t, left.unwrap_or(now)),
        );
    }
    v.at_most("reason", &req.reason, 500);
    v.into_result(())?;
    // Every line leaves at one moment, the transfer's ship time.
    let left = req.occur_time.or(Some(to_timestamp(now)));
    inv.retrying(tenant, || async {
        let (mut tx, rid) = match inv
            .begin(tenant, &req.request_id, "SendTransfer", &req)
            .await?
        {
            Begin::Replay(r) => return Ok(r),
            Begin::Tx(tx, rid) => (tx, rid),
        };
        let name = format!("transfers/{}", req.transfer_id);
        // Both checked before the stock leaves, which changes the gate.
        if repo::transfers::get(&mut *tx, tenant, &req.transfer_id, false)
            .await?
            .is_some()
        {
            return Err(Error::AlreadyExists {
                reason: "TRANSFER_EXISTS",
                name,
            });
        }
        if repo::nodes::get_visible(&mut *tx, tenant, &req.to_node_id)
            .await?
            .is_none()
        {
            return Err(Error::not_found(
                "node",
                format!("nodes/{}", req.to_node_id),
            ));
        }
        let mut t = Transfer {
            name,
            from_node_id: req.from_node_id.clone(),
            to_node_id: req.to_node_id.clone(),
            state: TransferState::InTransit as i32,
            reason: req.reason.clone(),
            actor: actor.to_owned(),
            expected_arrival_time: req.expected_arrival_time,
            ..Default::default()
        };
        let lots: Vec<_> = req
            .lines
            .iter()
            .map(|l| (req.from_node_id.as_str(), l.sku.as_str(), l.lot.as_str()))
            .collect();
        repo::stock::lock_for_movements(&mut tx, tenant, &lots).await?;
        let mut resp = SendTransferResponse::default();
        for (i, l) in req.lines.iter().enumerate() {
            // The lot leaves with its date as the ledger has it: a date sent
            // here (an output field) would restate the lot's at the node.
            let leaving = TransferLine {
                expiry_date: String::new(),
                ..l.clone()
            };
            let m = line_movement(
                MovementKind::TransferOut,
                &t,
                &req.from_node_id,
                &leaving,
                -l.quantity,
                left,
            );
            let out = move_line(inv, &mut tx, tenant, actor, &rid, i, m).await?;
            if out.held_beyond_stock > 0 {
                resp.shortfalls.push(StockShortfall {
                    node_id: req.from_node_id.clone(),
                    sku: l.sku.clone(),
                    held_beyond_stock: out.held_beyond_stock,
                });
            }
            // The lot travels with its expiry date.
            t.lines.push(TransferLine {
                expiry_date: out.movement.expiry_date.clone(),
                in_transit: l.quantity,
                quantity_received: 0,
                quantity_lost: 0,
                quantity_returned: 0,
                ..l.clone()
            });
            t.ship_time = out.movement.occur_time;
            t.update_time = out.movement.record_time;
            resp.transfer_outs.push(out.movement);
        }
        if !repo::transfers::insert(&mut tx, tenant, &t, Utc::now()).await? {
            return Err(Error::AlreadyExists {
                reason: "TRANSFER_EXISTS",
                name: t.name,
            });
        }
        resp.transfer = Some(t);
        inv.finish(tx, tenant, &rid, resp).await
    })
    .await
}

pub async fn receive(
    inv: &Inventory,
    tenant: &Tenant,
    actor: &str,
    req: ReceiveTransferRequest,
) -> Result<ReceiveTransferResponse> {
    let mut v = Violations::new();
    v.check("request_id", RequestId::parse(&req.request_id));
    let id = v
        .check("name", parse_name(&req.name, "transfers"))
        .unwrap_or_default()
        .to_owned();
    if req.lines.is_empty() && !req.close {
        v.add("lines", "name what arrived, or close the transfer");
    }
    check_lines(&mut v, &req.lines);
    let now = Utc::now();
    v.check("occur_time", check_happened(req.occur_time.as_ref(), now));
    v.at_most("reason", &req.reason, 500);
    v.into_result(())?;
    // Every line of a delivery arrives at one moment.
    let arrived = req.occur_time.or(Some(to_timestamp(now)));
    inv.retrying(tenant, || async {
        let (mut tx, rid) = match inv
            .begin(tenant, &req.request_id, "ReceiveTransfer", &req)
            .await?
        {
            Begin::Replay(r) => return Ok(r),
            Begin::Tx(tx, rid) => (tx, rid),
        };
        let Some(mut t) = repo::transfers::get(&mut *tx, tenant, &id, true).await? else {
            return Err(Error::not_found("transfer", req.name.clone()));
        };
        if t.state != TransferState::InTransit as i32 {
            let state = TransferState::try_from(t.state).unwrap_or_default();
            return Err(Error::precondition(
                "TRANSFER_ENDED",
                t.name.clone(),
                format!(
                    "{} is {}: nothing of it is on the way",
                    t.name,
                    state.as_str_name()
                ),
            ));
        }
        let at = arrived_lines(&t, &req.lines)?;
        // Where the units arrive: the receiving node, or back where they
        // left.
        let node = match req.back_to_origin {
            true => t.from_node_id.clone(),
            false => t.to_node_id.clone(),
        };
        let lots: Vec<_> = req
            .lines
            .iter()
            .map(|l| (node.as_str(), l.sku.as_str(), l.lot.as_str()))
            .collect();
        repo::stock::lock_for_movements(&mut tx, tenant, &lots).await?;
        let mut resp = ReceiveTransferResponse::default();
        for (i, (l, &k)) in req.lines.iter().zip(&at).enumerate() {
            let m = line_movement(
                MovementKind::TransferIn,
                &t,
                &node,
                &TransferLine {
                    expiry_date: t.lines[k].expiry_date.clone(),
                    ..l.clone()
                },
                l.quantity,
                arrived,
            );
            let inn = move_line(inv, &mut tx, tenant, actor, &rid, i, m).await?;
            resp.transfer_ins.push(inn.movement);
            let line = &mut t.lines[k];
            match req.back_to_origin {
                true => line.quantity_returned += l.quantity,
                false => line.quantity_received += l.quantity,
            }
            line.in_transit -= l.quantity;
            line.serial_numbers
                .retain(|s| !l.serial_numbers.contains(s));
        }
        let lost: i64 = match req.close {
            true => t.lines.iter().map(|l| l.in_transit).sum(),
            false => 0,
        };
        if lost > 0 && req.reason.trim().is_empty() {
            return Err(Violations::one(
                "reason",
                format!("is required: closing writes off {lost} units lost on the way"),
            )
            .into());
        }
        if req.close {
            for l in &mut t.lines {
                l.quantity_lost += l.in_transit;
                l.in_transit = 0;
            }
        }
        if lost > 0 {
            t.close_reason = req.reason.clone();
        }
        let now = Utc::now();
        t.update_time = Some(to_timestamp(now));
        if t.lines.iter().all(|l| l.in_transit == 0) {
            // Received: every unit reached the receiving node.
            let short = |l: &TransferLine| l.quantity_lost > 0 || l.quantity_returned > 0;
            t.state = if t.lines.iter().any(short) {
                TransferState::Closed
            } else {
                TransferState::Received
            } as i32;
            let closed = TransferClosed {
                transfer: Some(t.clone()),
            };
            let kind = inventory_event::Kind::TransferClosed(closed);
            emit(&mut tx, tenant, &t.name, rid.as_str(), kind).await?;
        }
        repo::transfers::update(&mut tx, tenant, &t, now).await?;
        resp.transfer = Some(t);
        inv.finish(tx, tenant, &rid, resp).await
    })
    .await
}

/// An expected arrival: at or after the stock left, within a year of it.
fn check_arrival(t: &Timestamp, left: chrono::DateTime<Utc>) -> std::result::Result<(), String> {
    match from_timestamp(t) {
        None => Err("is not a valid timestamp".into()),
        Some(at) if at < left => Err("is before the stock left".into()),
        Some(at) if at > left + chrono::Duration::days(365) => {
            Err("is more than a year after the stock left".into())
        }
        Some(_) => Ok(()),
    }
}

/// The transfer's line each arriving line is (by SKU and lot), once each
/// is checked against what the line has on the way.
fn arrived_lines(t: &Transfer, arrived: &[TransferLine]) -> Result<Vec<usize>> {
    let refuse =
        |reason, message: String| Err(Error::precondition(reason, t.name.clone(), message));
    let mut at = Vec::with_capacity(arrived.len());
    for (i, l) in arrived.iter().enumerate() {
        let Some(k) = t
            .lines
            .iter()
            .position(|s| s.sku == l.sku && s.lot == l.lot)
        else {
            let lot = match l.lot.as_str() {
                "" => String::new(),
                lot => format!(" in lot {lot}"),
            };
            return refuse(
                "NOT_IN_TRANSFER",
                format!("lines[{i}]: {} did not send {}{lot}", t.name, l.sku),
            );
        };
        let sent = &t.lines[k];
        if l.quantity > sent.in_transit {
            return refuse(
                "RECEIPT_EXCEEDS_IN_TRANSIT",
                format!(
                    "lines[{i}]: {} of {} on the way by {}; the receipt brings {}",
                    sent.in_transit, l.sku, t.name, l.quantity
                ),
            );
        }
        let unsent: Vec<&str> = l
            .serial_numbers
            .iter()
            .filter(|s| !sent.serial_numbers.contains(s))
            .map(|s| s.as_str())
            .take(5)
            .collect();
        if !unsent.is_empty() {
            return refuse(
                "SERIAL_NOT_IN_TRANSIT",
                format!(
                    "lines[{i}]: serial numbers of {} not on the way by {}: {}",
                    l.sku,
                    t.name,
                    unsent.join(", ")
                ),
            );
        }
        at.push(k);
    }
    Ok(at)
}

pub async fn get(
    inv: &Inventory,
    tenant: &Tenant,
    req: GetTransferRequest,
) -> Result<GetTransferResponse> {
    let id = parse_name(&req.name, "transfers").map_err(|e| Violations::one("name", e))?;
    match repo::transfers::get(&inv.pool, tenant, id, false).await? {
        Some(t) => Ok(GetTransferResponse { transfer: Some(t) }),
        None => Err(Error::not_found("transfer", req.name)),
    }
}

pub async fn list(
    inv: &Inventory,
    tenant: &Tenant,
    req: ListTransfersRequest,
) -> Result<ListTransfersResponse> {
    let mut v = Violations::new();
    let hash = oms_kernel::fingerprint(&ListTransfersRequest {
        page_size: 0,
        page_token: String::new(),
        ..req.clone()
    });
    let paging = Paging::<(chrono::DateTime<Utc>, String)>::parse(
        &mut v,
        req.page_size,
        &req.page_token,
        (100, 1000),
        hash,
    );
    let mut states = vec![];
    for (i, s) in req.states.iter().enumerate() {
        match TransferState::try_from(*s) {
            Ok(s) if s != TransferState::Unspecified => states.push(s.as_str_name().to_owned()),
            _ => v.add(format!("states[{i}]"), "unknown transfer state"),
        }
    }
    // A filter no transfer can match is a mistake, not an empty list.
    type Check = fn(&str) -> std::result::Result<(), String>;
    let mut filter = |field: &str, value: &str, check: Check| {
        if value.is_empty() {
            return None;
        }
        v.check(field, check(value));
        Some(value.to_owned())
    };
    let from_node = filter("from_node_id", &req.from_node_id, check_node_id);
    let to_node = filter("to_node_id", &req.to_node_id, check_node_id);
    let sku = filter("sku", &req.sku, check_sku);
    let due_before = req.arrival_due_before.as_ref().and_then(|t| {
        let due = from_timestamp(t);
        if due.is_none() {
            v.add("arrival_due_before", "is not a valid timestamp");
        }
        due
    });
    v.into_result(())?;
    let f = repo::transfers::Filter {
        states,
        from_node,
        to_node,
        sku,
        due_before,
        after: paging.after.clone(),
        limit: paging.fetch(),
    };
    let rows = repo::transfers::list(&inv.pool, tenant, &f).await?;
    let (rows, next_page_token) = paging.page(rows, |(t, id, _)| (*t, id.clone()));
    Ok(ListTransfersResponse {
        transfers: rows.into_iter().map(|(_, _, t)| t).collect(),
        next_page_token,
    })
}
