//! The stock ledger: movements, levels, and
//! the rules that hold stock back (safety stock, channel rules).
use super::{Begin, Inventory, emit, lot_expiry};
use crate::domain::{check_node_id, check_sku, expiry, movement};
use crate::error::{Error, Result};
use crate::gate::AvailChange;
use crate::repo;
use chrono::{DateTime, Utc};
use oms_kernel::{Paging, RequestId, Tenant, Violations};
use oms_proto::inventory::*;
use oms_runtime::time::to_timestamp;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Where a movement comes from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Asked for (RecordMovement, TransferStock, a snapshot row): it
    /// changes what the node can promise by its units in lots not expired.
    Request,
    /// Allocated units leaving with a shipment: what the node can promise
    /// is unchanged when they leave a lot not expired (the allocation held
    /// them).
    Shipment,
}

/// A movement as recorded, and what it left reservations short of.
pub(crate) struct Applied {
    pub movement: StockMovement,
    /// Units reservations hold at the node beyond its unexpired stock
    /// after a movement that took promised units away; 0 otherwise.
    pub held_beyond_stock: i64,
}

/// Applies one movement in `tx`: ledger row, on-hand, gate. `m.quantity`
/// is the signed change, or for cycle counts `m.counted_quantity` the new
/// on-hand. Refuses to take on-hand below zero.
pub(crate) async fn apply(
    inv: &Inventory,
    tx: &mut PgConnection,
    tenant: &Tenant,
    mut m: StockMovement,
    actor: &str,
    request_id: &str,
    origin: Origin,
) -> Result<Applied> {
    let Some(node) = repo::nodes::get_visible(&mut *tx, tenant, &m.node_id).await? else {
        return Err(Error::not_found("node", format!("nodes/{}", m.node_id)));
    };
    let Some(item) = repo::items::get(&mut *tx, tenant, &m.sku, repo::items::Lock::Share).await?
    else {
        return Err(Error::not_found("item", format!("items/{}", m.sku)));
    };
    let kind = MovementKind::try_from(m.kind).unwrap_or_default();
    // A WMS may report a lot for any item it ships: kept only for
    // lot-tracked items, whichever call records the shipment (orders
    // records one by RecordMovement when no reservation held the units).
    if kind == MovementKind::Shipment && !item.lot_tracked {
        m.lot.clear();
    }
    let lot = repo::stock::lock_lot(tx, tenant, &m.node_id, &m.sku, &m.lot).await?;
    let now = Utc::now();
    let r = ruled(&node, &item, &lot, m, origin, actor, now)?;
    let recorded = r.recorded();
    repo::stock::record(tx, tenant, &[recorded], now).await?;
    let m = r.movement;
    if item.serial_tracked && (!m.serial_numbers.is_empty() || kind == MovementKind::CycleCount) {
        track_serials(tx, tenant, &m, kind, r.id, now).await?;
    }
    if node.enabled {
        let changes = vec![(m.node_id.clone(), m.sku.clone(), r.change)];
        promise(inv, tx, tenant, changes).await?;
    }
    // Promised units taken away may leave reservations without stock.
    let held_beyond_stock = if r.change < 0 {
        let skus = std::slice::from_ref(&m.sku);
        held_beyond(inv, tx, tenant, &m.node_id, skus).await?[0]
    } else {
        0
    };
    let (subject, event) = moved(&m, held_beyond_stock);
    emit(tx, tenant, &subject, request_id, event).await?;
    Ok(Applied {
        movement: m,
        held_beyond_stock,
    })
}

/// A movement as the rules make it of its lot (`ruled`), to record.
pub(crate) struct Ruled {
    /// Stamped: id, signed quantity, on-hand after, actor, times.
    pub movement: StockMovement,
    pub id: Uuid,
    /// The lot's withdraw date after it, and whether that has come.
    pub withdraw_date: String,
    pub expired: bool,
    /// How the units the node can promise change.
    pub change: i64,
}

impl Ruled {
    pub fn recorded(&self) -> repo::stock::Recorded<'_> {
        repo::stock::Recorded {
            movement: &self.movement,
            id: self.id,
            withdraw_date: &self.withdraw_date,
            expired: self.expired,
        }
    }
}

/// What movement `m` of `item` at `node` does to its locked `lot`, by the
/// ledger's rules, or why it is refused; recorded `now` by `actor`.
pub(crate) fn ruled(
    node: &Node,
    item: &Item,
    lot: &repo::stock::Lot,
    mut m: StockMovement,
    origin: Origin,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<Ruled> {
    let kind = MovementKind::try_from(m.kind).unwrap_or_default();
    let old = lot.on_hand;
    // A lot keeps its expiry date: more units of it (a restock, the
    // arriving side of a transfer) need not repeat it.
    if m.expiry_date.is_empty() {
        m.expiry_date = lot.expiry_date.clone();
    }
    let delta = movement::delta(&m, old);
    // Counts restate what is there: only the lot rule applies to them.
    let units = if kind == MovementKind::CycleCount {
        0
    } else {
        delta
    };
    let mut tracking =
        movement::check_tracking(item, &m.lot, &m.expiry_date, &m.serial_numbers, units, "");
    if kind == MovementKind::CycleCount
        && item.serial_tracked
        && !m.serial_numbers.is_empty()
        && Some(m.serial_numbers.len() as i64) != m.counted_quantity
    {
        tracking.add(
            "serial_numbers",
            "a count that lists serial numbers lists one per unit counted",
        );
    }
    // A count that finds units of a lot the record has none of brings the
    // lot in, as a receipt does: without a date it would be promised for
    // ever.
    if kind == MovementKind::CycleCount
        && item.expiry_tracked
        && old == 0
        && m.counted_quantity > Some(0)
        && m.expiry_date.is_empty()
    {
        tracking.add(
            "expiry_date",
            format!(
                "{} tracks expiry: a count of a lot with no units on record gives its expiry date",
                item.sku
            ),
        );
    }
    if !tracking.is_empty() {
        return Err(tracking.into());
    }
    let new = old + delta;
    if new < 0 {
        return Err(Error::precondition(
            "INSUFFICIENT_ON_HAND",
            format!("nodes/{}/items/{}", m.node_id, m.sku),
            format!(
                "{} of {} on hand at {}; the movement takes {}",
                old, m.sku, m.node_id, -delta
            ),
        ));
    }
    let id = stamp(&mut m, old, delta, actor, now);
    let withdraw_date = expiry::withdraw_date(&m.lot, &m.expiry_date, item.min_shelf_life_days);
    let expired = expiry::is_expired(&withdraw_date, &node.time_zone, now);
    // What the node can promise moves with the lot's units that are not
    // expired. A shipment's units were held by an allocation, whose end
    // gives them back (the consume takes the hold away, not the units):
    // from a lot still promised that nets to nothing, from an expired lot
    // it frees units the hold had kept from the promised ones.
    let promised = |units: i64, expired: bool| if expired { 0 } else { units };
    let mut change = promised(new, expired) - promised(old, lot.expired);
    if origin == Origin::Shipment {
        change -= delta;
    }
    Ok(Ruled {
        movement: m,
        id,
        withdraw_date,
        expired,
        change,
    })
}

/// Stamps a movement as recorded `now` by `actor`, taking its lot's
/// on-hand from `old` by `delta`: returns its id.
pub(crate) fn stamp(
    m: &mut StockMovement,
    old: i64,
    delta: i64,
    actor: &str,
    now: DateTime<Utc>,
) -> Uuid {
    let id = Uuid::now_v7();
    m.movement_id = id.to_string();
    m.quantity = delta;
    m.on_hand_after = old + delta;
    m.actor = actor.to_owned();
    m.record_time = Some(to_timestamp(now));
    if m.occur_time.is_none() {
        m.occur_time = m.record_time;
    }
    id
}

/// Tells the gate how movements changed what enabled nodes can promise:
/// `(node, sku, units)`, each SKU's first change at a node starting from
/// its safety stock held back.
pub(crate) async fn promise(
    inv: &Inventory,
    tx: &mut PgConnection,
    tenant: &Tenant,
    changes: Vec<(String, String, i64)>,
) -> Result<()> {
    let changes: Vec<_> = changes.into_iter().filter(|c| c.2 != 0).collect();
    if changes.is_empty() {
        return Ok(());
    }
    let skus = super::distinct(changes.iter().map(|c| &c.1));
    let safety = repo::rules::safety(&mut *tx, tenant, &skus).await?;
    let changes = changes
        .into_iter()
        .map(|(node, sku, delta)| {
            let init = -repo::rules::effective(&safety, &node, &sku);
            AvailChange::stock(&sku, &node, delta, init)
        })
        .collect();
    super::adjust_gate(inv, tenant, changes).await
}

/// What reservations hold beyond the unexpired stock of each of `skus` at
/// `node`, after movements that took promised units away.
pub(crate) async fn held_beyond(
    inv: &Inventory,
    tx: &mut PgConnection,
    tenant: &Tenant,
    node: &str,
    skus: &[String],
) -> Result<Vec<i64>> {
    // Only this node's figures: a SKU stocked at hundreds of stores read
    // them all for every movement that took units (a count of 40,000 rows
    // downwards took twice as long as the first count).
    let now = super::availability::stock_and_holds(tx, tenant, skus, Some(node)).await?;
    Ok(skus
        .iter()
        .map(|sku| lot_expiry::held_beyond_stock(inv, &now, tenant, node, sku))
        .collect())
}

/// The event of a recorded movement: its subject and kind.
pub(crate) fn moved(m: &StockMovement, held_beyond_stock: i64) -> (String, inventory_event::Kind) {
    let kind = inventory_event::Kind::StockMoved(StockMoved {
        movement: Some(m.clone()),
        held_beyond_stock,
    });
    (format!("nodes/{}/items/{}", m.node_id, m.sku), kind)
}

/// Moves a movement's serial numbers: arriving ones must not be on hand
/// anywhere, leaving ones must be on hand at the node (and lot); a count
/// that lists them makes them exactly what is on hand there.
async fn track_serials(
    tx: &mut PgConnection,
    tenant: &Tenant,
    m: &StockMovement,
    kind: MovementKind,
    id: Uuid,
    now: chrono::DateTime<Utc>,
) -> Result<()> {
    use repo::serials::{self, Moved};
    let moved = Moved {
        sku: &m.sku,
        node: &m.node_id,
        lot: &m.lot,
        serials: &m.serial_numbers,
        movement: id,
        now,
    };
    if kind == MovementKind::CycleCount && m.serial_numbers.is_empty() {
        return count_unlisted(tx, tenant, m, &moved).await;
    }
    let arriving = kind == MovementKind::CycleCount || m.quantity > 0;
    let mut counted_out = vec![];
    let refused = if kind == MovementKind::CycleCount {
        counted_out = serials::count_out_unlisted(tx, tenant, &moved).await?;
        serials::arrive(tx, tenant, &moved, true).await?
    } else if arriving {
        serials::arrive(tx, tenant, &moved, false).await?
    } else {
        serials::leave(tx, tenant, &moved).await?
    };
    if refused.is_empty() {
        counted_out.extend(m.serial_numbers.iter().cloned());
        serials::record_history(tx, tenant, &m.sku, &counted_out, id).await?;
        return Ok(());
    }
    let known = serials::whereabouts(&mut *tx, tenant, &m.sku, &refused).await?;
    let said: Vec<String> = refused
        .iter()
        .take(5)
        .map(|s| match known.iter().find(|(k, _)| k == s) {
            Some((_, node)) if node.is_empty() => format!("{s} (has left)"),
            Some((_, node)) => format!("{s} (on hand at nodes/{node})"),
            None => format!("{s} (never received)"),
        })
        .collect();
    let more = match refused.len() {
        n if n > 5 => format!(" and {} more", n - 5),
        _ => String::new(),
    };
    let subject = format!("items/{}", m.sku);
    Err(if arriving {
        Error::precondition(
            "SERIAL_ON_HAND",
            subject,
            format!(
                "serial numbers of items/{} already on hand: {}{more}",
                m.sku,
                said.join(", ")
            ),
        )
    } else {
        Error::precondition(
            "SERIAL_NOT_ON_HAND",
            subject,
            format!(
                "serial numbers of items/{} not on hand at nodes/{}{}: {}{more}",
                m.sku,
                m.node_id,
                in_lot(&m.lot),
                said.join(", ")
            ),
        )
    })
}

/// A count of a serial-tracked item that names no serial numbers. To 0,
/// every serial on hand there has left. To at least as many units as
/// serials recorded there, they stay (the other units have no record, as
/// stock received before serials were kept). To fewer, which units left
/// is not known: the count is refused, where before it kept every serial
/// on hand, and a unit that had left could never be received or
/// returned again ("already on hand").
async fn count_unlisted(
    tx: &mut PgConnection,
    tenant: &Tenant,
    m: &StockMovement,
    moved: &repo::serials::Moved<'_>,
) -> Result<()> {
    use repo::serials;
    let counted = m.counted_quantity.unwrap_or_default();
    if counted == 0 {
        let gone = serials::count_out_unlisted(tx, tenant, moved).await?;
        serials::record_history(tx, tenant, &m.sku, &gone, moved.movement).await?;
        return Ok(());
    }
    let (there, first) = serials::on_hand_at(&mut *tx, tenant, &m.sku, &m.node_id, &m.lot).await?;
    if there <= counted {
        return Ok(());
    }
    let more = match there - first.len() as i64 {
        0 => String::new(),
        n => format!(" and {n} more"),
    };
    Err(Error::precondition(
        "SERIAL_NUMBERS_NOT_COUNTED",
        format!("items/{}", m.sku),
        format!(
            "{there} serial numbers of items/{} are on hand at nodes/{}{} ({}{more}): a count of {counted} lists the ones it found",
            m.sku,
            m.node_id,
            in_lot(&m.lot),
            first.join(", "),
        ),
    ))
}

/// " in lot L" for a lot, nothing without one.
fn in_lot(lot: &str) -> String {
    match lot {
        "" => String::new(),
        lot => format!(" in lot {lot}"),
    }
}

pub async fn record(
    inv: &Inventory,
    tenant: &Tenant,
    actor: &str,
    req: RecordMovementRequest,
) -> Result<RecordMovementResponse> {
    let (_, parsed) =
        RequestId::checked_with(&req.request_id, movement::parse(req.movement.clone()))?;
    inv.retrying(tenant, || async {
        let (mut tx, rid) = match inv
            .begin(tenant, &req.request_id, "RecordMovement", &req)
            .await?
        {
            Begin::Replay(r) => return Ok(r),
            Begin::Tx(tx, rid) => (tx, rid),
        };
        let m = apply(
            inv,
            &mut tx,
            tenant,
            parsed.clone(),
            actor,
            rid.as_str(),
            Origin::Request,
        )
        .await
        .map_err(in_movement)?;
        let resp = RecordMovementResponse {
            movement: Some(m.movement),
            held_beyond_stock: m.held_beyond_stock,
        };
        inv.finish(tx, tenant, &rid, resp).await
    })
    .await
}

/// `apply` names a movement's own fields (`lot`), as a transfer or a
/// snapshot row has them; RecordMovement's are under `movement`.
fn in_movement(e: Error) -> Error {
    nested("movement", e)
}

/// An error about a part of a request: its violations named under
/// `prefix` (`movement.lot`, `lines[1].lot`).
pub(crate) fn nested(prefix: &str, e: Error) -> Error {
    match e {
        Error::Invalid(v) => {
            let mut nested = Violations::new();
            nested.nest(prefix, v);
            Error::Invalid(nested)
        }
        other => other,
    }
}

pub async fn list_movements(
    inv: &Inventory,
    tenant: &Tenant,
    req: ListMovementsRequest,
) -> Result<ListMovementsResponse> {
    let mut v = Violations::new();
    let hash = oms_kernel::fingerprint(&ListMovementsRequest {
        page_size: 0,
        page_token: String::new(),
        ..req.clone()
    });
    let paging = Paging::<(chrono::DateTime<Utc>, Uuid)>::parse(
        &mut v,
        req.page_size,
        &req.page_token,
        (100, 1000),
        hash,
    );
    let (from, to) = oms_runtime::time::range(
        &mut v,
        "record_time",
        &req.record_time_from,
        &req.record_time_to,
    );
    v.at_most("reference", &req.reference, 200);
    // A filter no movement can match is a mistake, not an empty list.
    if !req.node_id.is_empty() {
        v.check("node_id", check_node_id(&req.node_id));
    }
    if !req.sku.is_empty() {
        v.check("sku", check_sku(&req.sku));
    }
    for (i, k) in req.kinds.iter().enumerate() {
        if !matches!(MovementKind::try_from(*k), Ok(k) if k != MovementKind::Unspecified) {
            v.add(format!("kinds[{i}]"), "unknown movement kind");
        }
    }
    v.into_result(())?;
    let filter = repo::stock::MovementFilter {
        node_id: (!req.node_id.is_empty()).then(|| req.node_id.clone()),
        sku: (!req.sku.is_empty()).then(|| req.sku.clone()),
        lot: (!req.lot.is_empty()).then(|| req.lot.clone()),
        kinds: req.kinds.iter().map(|k| k.to_string()).collect(),
        serial: (!req.serial_number.is_empty()).then(|| req.serial_number.clone()),
        reference: (!req.reference.is_empty()).then(|| req.reference.clone()),
        recorded: (from, to),
        after: paging.after,
        limit: paging.fetch(),
    };
    let rows = repo::stock::movements(&inv.pool, tenant, &filter).await?;
    let (rows, next_page_token) = paging.page(rows, |(t, id, _)| (*t, *id));
    Ok(ListMovementsResponse {
        movements: rows.into_iter().map(|(_, _, m)| m).collect(),
        next_page_token,
    })
}

pub async fn list_levels(
    inv: &Inventory,
    tenant: &Tenant,
    req: ListStockLevelsRequest,
) -> Result<ListStockLevelsResponse> {
    let mut v = Violations::new();
    let hash = oms_kernel::fingerprint(&ListStockLevelsRequest {
        page_size: 0,
        page_token: String::new(),
        ..req.clone()
    });
    let paging = Paging::<(String, String, String)>::parse(
        &mut v,
        req.page_size,
        &req.page_token,
        (100, 1000),
        hash,
    );
    v.check(
        "withdraw_before",
        oms_kernel::check_date(&req.withdraw_before),
    );
    if !req.node_id.is_empty() {
        v.check("node_id", check_node_id(&req.node_id));
    }
    let skus = super::availability::parse_skus(&mut v, &req.skus, false);
    v.into_result(())?;
    let filter = repo::stock::LevelFilter {
        node: (!req.node_id.is_empty()).then_some(req.node_id.as_str()),
        skus: &skus,
        withdraw_before: (!req.withdraw_before.is_empty()).then_some(req.withdraw_before.as_str()),
    };
    let rows = repo::stock::levels(
        &inv.pool,
        tenant,
        &filter,
        paging.after.as_ref(),
        paging.fetch(),
    )
    .await?;
    let (levels, next_page_token) =
        paging.page(rows, |l| (l.node_id.clone(), l.sku.clone(), l.lot.clone()));
    Ok(ListStockLevelsResponse {
        levels,
        next_page_token,
    })
}

pub async fn set_safety(
    inv: &Inventory,
    tenant: &Tenant,
    req: SetSafetyStockRequest,
) -> Result<SetSafetyStockResponse> {
    let mut v = Violations::new();
    v.check("request_id", RequestId::parse(&req.request_id));
    v.check("node_id", check_node_id(&req.node_id));
    if !req.sku.is_empty() {
        v.check("sku", check_sku(&req.sku));
    }
    if !(0..=movement::MAX_UNITS).contains(&req.quantity) {
        v.add("quantity", format!("must be 0 to {}", movement::MAX_UNITS));
    }
    if req.remove && req.quantity != 0 {
        v.add("quantity", "must be 0 when the entry is removed");
    }
    v.into_result(())?;
    inv.retrying(tenant, || async {
        let (mut tx, rid) = match inv
            .begin(tenant, &req.request_id, "SetSafetyStock", &req)
            .await?
        {
            Begin::Replay(r) => return Ok(r),
            Begin::Tx(tx, rid) => (tx, rid),
        };
        let nodes =
            repo::nodes::visible(&mut *tx, tenant, std::slice::from_ref(&req.node_id)).await?;
        let Some(&enabled) = nodes.get(&req.node_id) else {
            return Err(Error::not_found("node", format!("nodes/{}", req.node_id)));
        };
        if !req.sku.is_empty()
            && repo::items::get(&mut *tx, tenant, &req.sku, repo::items::Lock::None)
                .await?
                .is_none()
        {
            return Err(Error::not_found("item", format!("items/{}", req.sku)));
        }
        repo::lock::safety_at(&mut tx, tenant, &req.node_id).await?;
        // A node default applies to every SKU at the node without its own
        // figure: all of the node's rows matter then; a SKU's figure, only
        // its row and the default.
        let sku = (!req.sku.is_empty()).then_some(req.sku.as_str());
        let before = repo::rules::safety_at(&mut *tx, tenant, &req.node_id, sku).await?;
        let mut after = before.clone();
        let key = (req.node_id.clone(), req.sku.clone());
        if req.remove {
            repo::rules::remove_safety(&mut tx, tenant, &req.node_id, &req.sku).await?;
            after.remove(&key);
        } else {
            repo::rules::set_safety(&mut tx, tenant, &req.node_id, &req.sku, req.quantity).await?;
            after.insert(key, req.quantity);
        }
        let mut changed = vec![];
        if enabled {
            let skus = if req.sku.is_empty() {
                repo::rules::skus_at(&mut tx, tenant, &req.node_id).await?
            } else {
                vec![req.sku.clone()]
            };
            let changes: Vec<AvailChange> = skus
                .into_iter()
                .filter_map(|sku| {
                    let old = repo::rules::effective(&before, &req.node_id, &sku);
                    let new = repo::rules::effective(&after, &req.node_id, &sku);
                    (old != new).then(|| AvailChange::stock(&sku, &req.node_id, old - new, -old))
                })
                .collect();
            changed = changes.iter().map(|c| c.sku.clone()).collect();
            super::adjust_gate(inv, tenant, changes).await?;
        }
        let set = SafetyStockSet {
            node_id: req.node_id.clone(),
            sku: req.sku.clone(),
            quantity: req.quantity,
            skus: changed.clone(),
            removed: req.remove,
        };
        let subject = format!("nodes/{}", req.node_id);
        let kind = inventory_event::Kind::SafetyStockSet(set);
        emit(&mut tx, tenant, &subject, rid.as_str(), kind).await?;
        let resp = SetSafetyStockResponse {
            safety_stock: (!req.remove).then(|| SafetyStock {
                node_id: req.node_id.clone(),
                sku: req.sku.clone(),
                quantity: req.quantity,
            }),
            changed_skus: changed,
        };
        inv.finish(tx, tenant, &rid, resp).await
    })
    .await
}

pub async fn list_serials(
    inv: &Inventory,
    tenant: &Tenant,
    req: ListSerialNumbersRequest,
) -> Result<ListSerialNumbersResponse> {
    let mut v = Violations::new();
    v.check("sku", check_sku(&req.sku));
    if !req.node_id.is_empty() {
        v.check("node_id", check_node_id(&req.node_id));
    }
    if req.serial_numbers.len() > 1000 {
        v.add("serial_numbers", "at most 1000 per call");
    }
    let hash = oms_kernel::fingerprint(&ListSerialNumbersRequest {
        page_size: 0,
        page_token: String::new(),
        ..req.clone()
    });
    let paging = Paging::<String>::parse(&mut v, req.page_size, &req.page_token, (100, 1000), hash);
    v.into_result(())?;
    let filter = repo::serials::SerialFilter {
        sku: &req.sku,
        node: (!req.node_id.is_empty()).then_some(req.node_id.as_str()),
        serials: &req.serial_numbers,
        include_gone: req.include_gone,
        after: paging.after.as_deref(),
        limit: paging.fetch(),
    };
    let rows = repo::serials::list(&inv.pool, tenant, &filter).await?;
    let (serial_numbers, next_page_token) = paging.page(rows, |s| s.serial_number.clone());
    Ok(ListSerialNumbersResponse {
        serial_numbers,
        next_page_token,
    })
}

pub async fn list_safety(
    inv: &Inventory,
    tenant: &Tenant,
    req: ListSafetyStockRequest,
) -> Result<ListSafetyStockResponse> {
    let mut v = Violations::new();
    if !req.node_id.is_empty() {
        v.check("node_id", check_node_id(&req.node_id));
    }
    let skus = super::availability::parse_skus(&mut v, &req.skus, false);
    let hash = oms_kernel::fingerprint(&ListSafetyStockRequest {
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
    let node = (!req.node_id.is_empty()).then_some(req.node_id.as_str());
    let rows = repo::rules::list_safety(
        &inv.pool,
        tenant,
        node,
        &skus,
        paging.after.as_ref(),
        paging.fetch(),
    )
    .await?;
    let (safety_stock, next_page_token) = paging.page(rows, |s| (s.node_id.clone(), s.sku.clone()));
    Ok(ListSafetyStockResponse {
        safety_stock,
        next_page_token,
    })
}

pub async fn set_channel_rule(
    inv: &Inventory,
    tenant: &Tenant,
    req: SetChannelRuleRequest,
) -> Result<SetChannelRuleResponse> {
    let mut v = Violations::new();
    v.check("request_id", RequestId::parse(&req.request_id));
    let Some(rule) = req.rule.clone() else {
        v.add("rule", "is required");
        return Err(v.into());
    };
    v.check(
        "rule.channel",
        oms_kernel::parse_name(&rule.channel, "channels"),
    );
    for (i, n) in rule.node_ids.iter().enumerate() {
        v.check(format!("rule.node_ids[{i}]"), check_node_id(n));
    }
    v.no_repeats("rule.node_ids", &rule.node_ids);
    match rule.buffer {
        Some(channel_rule::Buffer::BufferPercent(p)) if !(0..=100).contains(&p) => {
            v.add("rule.buffer_percent", "must be 0 to 100")
        }
        Some(channel_rule::Buffer::BufferQuantity(q))
            if !(0..=movement::MAX_UNITS).contains(&q) =>
        {
            v.add(
                "rule.buffer_quantity",
                format!("must be 0 to {}", movement::MAX_UNITS),
            )
        }
        _ => {}
    }
    if req.remove && (!rule.node_ids.is_empty() || rule.buffer.is_some()) {
        v.add(
            "rule",
            "must name only its channel when the rule is removed",
        );
    }
    v.into_result(())?;
    let (mut tx, rid) = match inv
        .begin(tenant, &req.request_id, "SetChannelRule", &req)
        .await?
    {
        Begin::Replay(r) => return Ok(r),
        Begin::Tx(tx, rid) => (tx, rid),
    };
    if req.remove {
        if !repo::rules::remove_channel_rule(&mut tx, tenant, &rule.channel).await? {
            return Err(Error::not_found(
                "channel_rule",
                format!("rule of {}", rule.channel),
            ));
        }
    } else {
        let known = repo::nodes::visible(&mut *tx, tenant, &rule.node_ids).await?;
        let mut v = Violations::new();
        for (i, n) in rule.node_ids.iter().enumerate() {
            if !known.contains_key(n) {
                v.add(
                    format!("rule.node_ids[{i}]"),
                    format!("nodes/{n} not found"),
                );
            }
        }
        v.into_result(())?;
        repo::rules::set_channel_rule(&mut tx, tenant, &rule).await?;
    }
    let kind = inventory_event::Kind::ChannelRuleSet(ChannelRuleSet {
        rule: Some(rule.clone()),
        removed: req.remove,
    });
    emit(&mut tx, tenant, &rule.channel, rid.as_str(), kind).await?;
    let resp = SetChannelRuleResponse {
        rule: (!req.remove).then_some(rule),
    };
    inv.finish(tx, tenant, &rid, resp).await
}

pub async fn list_channel_rules(
    inv: &Inventory,
    tenant: &Tenant,
    req: ListChannelRulesRequest,
) -> Result<ListChannelRulesResponse> {
    let mut v = Violations::new();
    let paging = Paging::<String>::parse(&mut v, req.page_size, &req.page_token, (100, 1000), 0);
    v.into_result(())?;
    let after = paging.after.as_deref().unwrap_or("");
    let rows = repo::rules::channel_rules(&inv.pool, tenant, after, paging.fetch()).await?;
    let (rules, next_page_token) = paging.page(rows, |r| r.channel.clone());
    Ok(ListChannelRulesResponse {
        rules,
        next_page_token,
    })
}

/// Copies the references of movements recorded before they were a column
/// (migration 0011), a batch at a time, until none is left: until then
/// ListMovements by `reference` misses them. Runs once per start.
pub fn start_copying_references(pool: PgPool, shutdown: CancellationToken) {
    const BATCH: i64 = 1000;
    tokio::spawn(async move {
        let mut copied = 0;
        loop {
            let batch = tokio::select! {
                _ = shutdown.cancelled() => return,
                batch = repo::stock::copy_references(&pool, BATCH) => batch,
            };
            match batch {
                Ok(0) => break,
                Ok(n) => copied += n,
                Err(e) => {
                    tracing::warn!(error = %e, "copying the references of older movements; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
                    }
                }
            }
        }
        if copied > 0 {
            tracing::info!(movements = copied, "references of older movements copied");
        }
    });
}
