//! Fulfillment orders: created from a routing plan (one per order and
//! node), released to the node's adapter as a command, cancelled (at once
//! before release, by asking the WMS after).
use crate::service::{DOMAIN, Fulfillment, db, emit_moved, invalid};
use crate::{repo, state};
use chrono::Utc;
use oms_kernel::{Paging, RequestId, Tenant, Violations, parse_name, parse_uuid_name};
use oms_proto::fulfillment::{CancelCommand, FulfillmentState as S, command, *};
use oms_runtime::{
    idempotency::{self, Begin},
    outbox, status,
    time::to_timestamp,
};
use std::collections::HashSet;
use tonic::Status;
use uuid::Uuid;

const MAX_LINES: usize = 1000;

/// The id in `fulfillmentOrders/{id}`, or a violation of `field`.
pub fn order_id(field: &str, name: &str) -> Result<Uuid, Violations> {
    parse_uuid_name(name, "fulfillmentOrders", "a fulfillment order")
        .map_err(|e| Violations::one(field, e))
}

fn not_found(name: &str) -> Status {
    status::not_found(DOMAIN, "fulfillment order", name)
}

fn check_new(fo: &FulfillmentOrder) -> Violations {
    let mut v = Violations::new();
    let f = "fulfillment_order";
    v.check(format!("{f}.order"), parse_name(&fo.order, "orders"));
    v.check(format!("{f}.node_id"), oms_kernel::check_id(&fo.node_id));
    if !fo.decision.is_empty() {
        v.check(
            format!("{f}.decision"),
            parse_name(&fo.decision, "decisions"),
        );
    }
    if !fo.reservation.is_empty() {
        v.check(
            format!("{f}.reservation"),
            parse_name(&fo.reservation, "reservations"),
        );
    }
    // Sent on to the warehouse as orders has it: the same form.
    if let Some(a) = &fo.ship_to {
        oms_runtime::address::check_form(&mut v, &format!("{f}.ship_to"), a);
    }
    v.at_most(format!("{f}.carrier_service"), &fo.carrier_service, 100);
    if fo.lines.is_empty() {
        v.add(format!("{f}.lines"), "at least one line is required");
    }
    if fo.lines.len() > MAX_LINES {
        v.add(format!("{f}.lines"), format!("at most {MAX_LINES} lines"));
    }
    let mut ids = HashSet::new();
    for (i, l) in fo.lines.iter().enumerate() {
        let lf = format!("{f}.lines[{i}]");
        if l.line_id.trim().is_empty() {
            v.add(format!("{lf}.line_id"), "required");
        } else if l.line_id.len() > 64 {
            // An order line's limit.
            v.add(format!("{lf}.line_id"), "must be at most 64 characters");
        } else if !ids.insert(l.line_id.as_str()) {
            v.add(format!("{lf}.line_id"), "duplicate line id");
        }
        // Inventory's rule: its shipment is recorded there.
        v.check(format!("{lf}.sku"), oms_kernel::check_sku(&l.sku));
        if l.quantity <= 0 {
            v.add(format!("{lf}.quantity"), "must be positive");
        } else if l.quantity > 1_000_000 {
            // An order line's limit.
            v.add(format!("{lf}.quantity"), "must be at most 1000000");
        }
        if l.quantity_shipped != 0 {
            v.add(format!("{lf}.quantity_shipped"), "output only; leave it 0");
        }
        v.check(
            format!("{lf}.min_expiry_date"),
            oms_kernel::check_date(&l.min_expiry_date),
        );
    }
    v
}

pub async fn create(
    r: &Fulfillment,
    tenant: &Tenant,
    req: CreateFulfillmentOrderRequest,
) -> Result<CreateFulfillmentOrderResponse, Status> {
    let mut fo = req.fulfillment_order.clone().unwrap_or_default();
    let mut v = check_new(&fo);
    let rid = v.check("request_id", RequestId::parse(&req.request_id));
    let Some(rid) = rid.filter(|_| v.is_empty()) else {
        return Err(invalid(v));
    };
    let mut tx = match idempotency::begin(
        &r.pool,
        DOMAIN,
        tenant,
        &rid,
        "CreateFulfillmentOrder",
        &req,
    )
    .await?
    {
        Begin::Replay(resp) => return Ok(resp),
        Begin::Tx(tx) => tx,
    };
    let now = Utc::now();
    let id = Uuid::now_v7();
    fo.name = format!("fulfillmentOrders/{id}");
    fo.fulfillment_order_id = id.to_string();
    fo.set_state(S::PendingRelease);
    fo.shipments.clear();
    fo.status_reason.clear();
    fo.create_time = Some(to_timestamp(now));
    fo.version = 0;
    state::touch(&mut fo, now);
    repo::insert_order(&mut tx, tenant, id, &fo, now)
        .await
        .map_err(db)?;
    emit_moved(&mut tx, tenant, &fo, rid.as_str(), S::Unspecified).await?;
    let resp = CreateFulfillmentOrderResponse {
        fulfillment_order: Some(fo),
    };
    r.finish(tx, tenant, &rid, resp).await
}

/// A change to one fulfillment order, started: the transaction (holding
/// the request's claim and the order's row lock) and the order.
struct Started {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    rid: RequestId,
    id: Uuid,
    fo: FulfillmentOrder,
}

enum Open<R> {
    Replay(R),
    Started(Box<Started>),
}

/// Claims the request and locks the named fulfillment order.
async fn open<Req: prost::Message, Resp: prost::Message + Default>(
    r: &Fulfillment,
    tenant: &Tenant,
    (request, name): (&str, &str),
    method: &str,
    req: &Req,
    body: Violations,
) -> Result<Open<Resp>, Status> {
    let mut v = Violations::new();
    let rid = v.check("request_id", RequestId::parse(request));
    let id = order_id("name", name).map_err(|e| v.0.extend(e.0)).ok();
    v.0.extend(body.0);
    let (Some(rid), Some(id), true) = (rid, id, v.is_empty()) else {
        return Err(invalid(v));
    };
    let mut tx = match idempotency::begin(&r.pool, DOMAIN, tenant, &rid, method, req).await? {
        Begin::Replay(resp) => return Ok(Open::Replay(resp)),
        Begin::Tx(tx) => tx,
    };
    let fo = repo::order(&mut *tx, tenant, id, true)
        .await
        .map_err(db)?
        .ok_or_else(|| not_found(name))?;
    Ok(Open::Started(Box::new(Started { tx, rid, id, fo })))
}

pub async fn release(
    r: &Fulfillment,
    tenant: &Tenant,
    req: ReleaseFulfillmentOrderRequest,
) -> Result<ReleaseFulfillmentOrderResponse, Status> {
    let key = (req.request_id.as_str(), req.name.as_str());
    let Started {
        mut tx,
        rid,
        id,
        mut fo,
    } = match open(
        r,
        tenant,
        key,
        "ReleaseFulfillmentOrder",
        &req,
        Violations::new(),
    )
    .await?
    {
        Open::Replay(resp) => return Ok(resp),
        Open::Started(s) => *s,
    };
    let from = fo.state();
    match from {
        S::PendingRelease => {
            let now = Utc::now();
            fo.set_state(S::Released);
            state::touch(&mut fo, now);
            let release = command::Kind::Release(fo.clone());
            repo::append_command(&mut tx, tenant, &fo.node_id, release, now)
                .await
                .map_err(db)?;
            repo::save_order(&mut tx, tenant, id, &fo, now)
                .await
                .map_err(db)?;
            emit_moved(&mut tx, tenant, &fo, rid.as_str(), from).await?;
        }
        S::Cancelled | S::Rejected => {
            return Err(status::failed_precondition(
                DOMAIN,
                "NOT_RELEASABLE",
                &fo.name,
                &format!(
                    "{} is {} and cannot be released",
                    fo.name,
                    state::name(from)
                ),
            ));
        }
        // Released already: releasing again changes nothing.
        _ => {}
    }
    let resp = ReleaseFulfillmentOrderResponse {
        fulfillment_order: Some(fo),
    };
    r.finish(tx, tenant, &rid, resp).await
}

/// Longest reason a cancel takes.
const MAX_CANCEL_REASON: usize = 1000;

pub async fn cancel(
    r: &Fulfillment,
    tenant: &Tenant,
    req: CancelFulfillmentOrderRequest,
) -> Result<CancelFulfillmentOrderResponse, Status> {
    let key = (req.request_id.as_str(), req.name.as_str());
    let mut v = Violations::new();
    // Orders sends "order cancelled: " and an order's reason (at most 500).
    v.at_most("reason", &req.reason, MAX_CANCEL_REASON);
    let Started {
        mut tx,
        rid,
        id,
        mut fo,
    } = match open(r, tenant, key, "CancelFulfillmentOrder", &req, v).await? {
        Open::Replay(resp) => return Ok(resp),
        Open::Started(s) => *s,
    };
    let now = Utc::now();
    let from = fo.state();
    let reason = if req.reason.trim().is_empty() {
        "cancelled".to_owned()
    } else {
        req.reason.clone()
    };
    match from {
        S::PendingRelease => {
            fo.set_state(S::Cancelled);
            fo.status_reason = reason;
            state::touch(&mut fo, now);
            repo::save_order(&mut tx, tenant, id, &fo, now)
                .await
                .map_err(db)?;
            emit_moved(&mut tx, tenant, &fo, rid.as_str(), from).await?;
        }
        // At the WMS: ask it; its answer (CancelAnswered) decides.
        S::Released | S::Accepted | S::Picking | S::Packed => {
            let cancel = command::Kind::Cancel(CancelCommand {
                fulfillment_order: fo.name.clone(),
                reason: reason.clone(),
            });
            repo::append_command(&mut tx, tenant, &fo.node_id, cancel, now)
                .await
                .map_err(db)?;
            fo.status_reason = format!("cancel requested: {reason}");
            state::touch(&mut fo, now);
            repo::save_order(&mut tx, tenant, id, &fo, now)
                .await
                .map_err(db)?;
        }
        S::Cancelled => {}
        S::Shipped | S::Delivered | S::Rejected | S::Unspecified => {
            return Err(status::failed_precondition(
                DOMAIN,
                "NOT_CANCELLABLE",
                &fo.name,
                &format!(
                    "{} is {} and cannot be cancelled",
                    fo.name,
                    state::name(from)
                ),
            ));
        }
    }
    let resp = CancelFulfillmentOrderResponse {
        fulfillment_order: Some(fo),
    };
    r.finish(tx, tenant, &rid, resp).await
}

pub async fn get(
    r: &Fulfillment,
    tenant: &Tenant,
    req: GetFulfillmentOrderRequest,
) -> Result<GetFulfillmentOrderResponse, Status> {
    let id = order_id("name", &req.name).map_err(invalid)?;
    let fo = repo::order(&r.pool, tenant, id, false)
        .await
        .map_err(db)?
        .ok_or_else(|| not_found(&req.name))?;
    Ok(GetFulfillmentOrderResponse {
        fulfillment_order: Some(fo),
    })
}

pub async fn list(
    r: &Fulfillment,
    tenant: &Tenant,
    req: ListFulfillmentOrdersRequest,
) -> Result<ListFulfillmentOrdersResponse, Status> {
    let mut v = Violations::new();
    if !req.order.is_empty() {
        v.check("order", parse_name(&req.order, "orders"));
    }
    let mut states = Vec::new();
    for (i, s) in req.states.iter().enumerate() {
        match S::try_from(*s) {
            Ok(s) if s != S::Unspecified => states.push(state::to_db(s)),
            _ => v.add(format!("states[{i}]"), "unknown state"),
        }
    }
    let hash = oms_kernel::fingerprint(&ListFulfillmentOrdersRequest {
        page_size: 0,
        page_token: String::new(),
        ..req.clone()
    });
    let (changed_from, _) =
        oms_runtime::time::range(&mut v, "update_time", &req.update_time_from, &None);
    let paging = Paging::<Uuid>::parse(&mut v, req.page_size, &req.page_token, (50, 500), hash);
    if !v.is_empty() {
        return Err(invalid(v));
    }
    // Taken before the page is read: see `feed_cursor` in the proto.
    let feed_cursor = outbox::head(&r.pool).await.map_err(db)?.to_string();
    let filter = repo::OrderFilter {
        order: &req.order,
        node: &req.node_id,
        states: &states,
        changed_from,
    };
    let rows = repo::list_orders(&r.pool, tenant, &filter, paging.after, paging.fetch())
        .await
        .map_err(db)?;
    let (rows, next_page_token) = paging.page(rows, |(id, _)| *id);
    Ok(ListFulfillmentOrdersResponse {
        fulfillment_orders: rows.into_iter().map(|(_, fo)| fo).collect(),
        next_page_token,
        feed_cursor,
    })
}
