//! Transfers between nodes: at once (both movements in one transaction),
//! or in transit (the transfer-out when the stock leaves, a transfer-in
//! for each delivery that arrives), so that stock on a truck is promised
//! by neither node.
use super::movements::{Origin, apply};
use super::{Begin, Inventory, emit};
use crate::domain::{check_node_id, check_sku, movement};
use crate::error::{Error, Result};
use crate::repo;
use chrono::Utc;
use oms_kernel::{Paging, RequestId, Tenant, Violations, check_id, parse_name};
use oms_proto::inventory::*;
use oms_runtime::time::{check_happened, to_timestamp};
use std::collections::HashSet;

pub async fn transfer(
    inv: &Inventory,
    tenant: &Tenant,
    actor: &str,
    req: TransferStockRequest,
) -> Result<TransferStockResponse> {
    let mut v = Violations::new();
    v.check("request_id", RequestId::parse(&req.request_id));
    v.check("from_node_id", check_node_id(&req.from_node_id));
    v.check("to_node_id", check_node_id(&req.to_node_id));
    v.check("sku", check_sku(&req.sku));
    // Two empty ids are "is required" each, not also the same node.
    if req.from_node_id == req.to_node_id && !req.to_node_id.is_empty() {
        v.add("to_node_id", "must differ from from_node_id");
    }
    if req.quantity <= 0 {
        v.add("quantity", "must be positive");
    } else if req.quantity > movement::MAX_UNITS {
        v.add(
            "quantity",
            format!("must be at most {}", movement::MAX_UNITS),
        );
    }
    if req.in_transit || !req.transfer_id.is_empty() {
        v.check("transfer_id", check_id(&req.transfer_id));
    }
    v.check(
        "occur_time",
        check_happened(req.occur_time.as_ref(), Utc::now()),
    );
    v.at_most("reason", &req.reason, 500);
    v.into_result(())?;
    let name = format!("transfers/{}", req.transfer_id);
    let reference = match req.transfer_id.as_str() {
        "" => format!("transfer:{}->{}", req.from_node_id, req.to_node_id),
        _ => name.clone(),
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
        occur_time: req.occur_time,
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
        if req.in_transit {
            // Checked before the stock leaves, which changes the gate.
            if repo::transfers::get(&mut *tx, tenant, &req.transfer_id, false)
                .await?
                .is_some()
            {
                return Err(Error::AlreadyExists {
                    reason: "TRANSFER_EXISTS",
                    name: name.clone(),
                });
            }
            // Where stock in transit goes must be there when it leaves.
            if repo::nodes::get_visible(&mut *tx, tenant, &req.to_node_id)
                .await?
                .is_none()
            {
                return Err(Error::not_found(
                    "node",
                    format!("nodes/{}", req.to_node_id),
                ));
            }
        }
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
        let mut resp = TransferStockResponse {
            held_beyond_stock: out.held_beyond_stock,
            ..Default::default()
        };
        if req.in_transit {
            let m = &out.movement;
            let t = Transfer {
                name: name.clone(),
                from_node_id: req.from_node_id.clone(),
                to_node_id: req.to_node_id.clone(),
                sku: req.sku.clone(),
                lot: m.lot.clone(),
                expiry_date: m.expiry_date.clone(),
                quantity: req.quantity,
                in_transit: req.quantity,
                serial_numbers: req.serial_numbers.clone(),
                state: TransferState::InTransit as i32,
                reason: req.reason.clone(),
                actor: actor.to_owned(),
                ship_time: m.occur_time,
                update_time: m.record_time,
                ..Default::default()
            };
            if !repo::transfers::insert(&mut tx, tenant, &t, Utc::now()).await? {
                return Err(Error::AlreadyExists {
                    reason: "TRANSFER_EXISTS",
                    name: name.clone(),
                });
            }
            resp.transfer = Some(t);
        } else {
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
            resp.transfer_in = Some(inn.movement);
        }
        resp.transfer_out = Some(out.movement);
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
    if req.quantity < 0 || req.quantity > movement::MAX_UNITS {
        v.add("quantity", format!("must be 0 to {}", movement::MAX_UNITS));
    } else if req.quantity == 0 && !req.close {
        v.add("quantity", "must be positive, or 0 to close the transfer");
    }
    let mut seen = HashSet::new();
    for (i, s) in req.serial_numbers.iter().enumerate() {
        if !seen.insert(s) {
            v.add(format!("serial_numbers[{i}]"), "given twice");
        }
    }
    v.check(
        "occur_time",
        check_happened(req.occur_time.as_ref(), Utc::now()),
    );
    v.at_most("reason", &req.reason, 500);
    v.into_result(())?;
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
        if req.quantity > t.in_transit {
            return Err(Error::precondition(
                "RECEIPT_EXCEEDS_IN_TRANSIT",
                t.name.clone(),
                format!(
                    "{} of {} on the way by {}; the receipt brings {}",
                    t.in_transit, t.sku, t.name, req.quantity
                ),
            ));
        }
        let unsent: Vec<&String> = req
            .serial_numbers
            .iter()
            .filter(|s| !t.serial_numbers.contains(s))
            .collect();
        if !unsent.is_empty() {
            return Err(Error::precondition(
                "SERIAL_NOT_IN_TRANSIT",
                t.name.clone(),
                format!(
                    "serial numbers not on the way by {}: {}",
                    t.name,
                    unsent
                        .iter()
                        .take(5)
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        let lost = if req.close {
            t.in_transit - req.quantity
        } else {
            0
        };
        if lost > 0 && req.reason.trim().is_empty() {
            return Err(Violations::one(
                "reason",
                format!("is required: closing writes off {lost} units lost on the way"),
            )
            .into());
        }
        let mut resp = ReceiveTransferResponse::default();
        if req.quantity > 0 {
            let arriving = StockMovement {
                kind: MovementKind::TransferIn as i32,
                node_id: t.to_node_id.clone(),
                sku: t.sku.clone(),
                lot: t.lot.clone(),
                expiry_date: t.expiry_date.clone(),
                quantity: req.quantity,
                reason: t.reason.clone(),
                reference: t.name.clone(),
                serial_numbers: req.serial_numbers.clone(),
                occur_time: req.occur_time,
                ..Default::default()
            };
            let m = apply(
                inv,
                &mut tx,
                tenant,
                arriving,
                actor,
                rid.as_str(),
                Origin::Request,
            )
            .await?;
            resp.transfer_in = Some(m.movement);
        }
        let now = Utc::now();
        t.quantity_received += req.quantity;
        t.quantity_lost += lost;
        t.in_transit -= req.quantity + lost;
        t.serial_numbers.retain(|s| !req.serial_numbers.contains(s));
        if lost > 0 {
            t.close_reason = req.reason.clone();
        }
        t.update_time = Some(to_timestamp(now));
        if t.in_transit == 0 {
            t.state = if t.quantity_lost > 0 {
                TransferState::Closed
            } else {
                TransferState::Received
            } as i32;
            emit(
                &mut tx,
                tenant,
                &t.name,
                rid.as_str(),
                inventory_event::Kind::TransferClosed(TransferClosed {
                    transfer: Some(t.clone()),
                }),
            )
            .await?;
        }
        repo::transfers::update(&mut tx, tenant, &t, now).await?;
        resp.transfer = Some(t);
        inv.finish(tx, tenant, &rid, resp).await
    })
    .await
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
    let mut filter =
        |field: &str, value: &str, check: fn(&str) -> std::result::Result<(), String>| {
            if value.is_empty() {
                return None;
            }
            v.check(field, check(value));
            Some(value.to_owned())
        };
    let from_node = filter("from_node_id", &req.from_node_id, check_node_id);
    let to_node = filter("to_node_id", &req.to_node_id, check_node_id);
    let sku = filter("sku", &req.sku, check_sku);
    v.into_result(())?;
    let f = repo::transfers::Filter {
        states,
        from_node,
        to_node,
        sku,
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
