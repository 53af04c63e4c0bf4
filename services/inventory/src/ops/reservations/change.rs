//! Changes of one reservation at a time: confirm, release, consume,
//! extend, expire.
use super::lines::*;
use super::place;
use crate::domain::movement;
use crate::domain::reservation::{Entries, check_ttl, parse_entries};
use crate::error::{Error, Result};
use crate::gate::{self, GateError, Holds, Line, Op, Short};
use crate::ops::movements::Origin;
use crate::ops::{Begin, Inventory, emit, now_ms};
use crate::repo::{self, lock};
use chrono::Utc;
use oms_kernel::{RequestId, Tenant, Violations, parse_name};
use oms_proto::inventory::*;
use oms_runtime::time::to_timestamp;
use prost::Message;
use std::collections::BTreeMap;

/// What a change of a reservation names, checked at once: its request
/// id, the reservation and the entries (parsed by the caller).
fn change_target<'a>(
    request_id: &str,
    name: &'a str,
    entries: std::result::Result<Vec<Line>, Violations>,
) -> Result<(&'a str, Vec<Line>)> {
    let mut v = Violations::new();
    v.check("request_id", RequestId::parse(request_id));
    let id = v.check("name", parse_name(name, "reservations"));
    let entries = v.merge(entries);
    match (id, entries, v.is_empty()) {
        (Some(id), Some(entries), true) => Ok((id, entries)),
        _ => Err(v.into()),
    }
}

/// A change asked of one reservation.
pub struct Change<'a> {
    pub op: Op,
    pub id: &'a str,
    pub entries: Vec<Line>,
    pub reason: &'a str,
    pub reference: &'a str,
    /// An extension's new expiry (ms since the epoch): the reservation is
    /// renewed to it.
    pub renew: Option<i64>,
}

impl<'a> Change<'a> {
    /// A change with no reason, reference or renewal (a caller sets those
    /// it has).
    fn new(op: Op, id: &'a str, entries: Vec<Line>) -> Self {
        Change {
            op,
            id,
            entries,
            reason: "",
            reference: "",
            renew: None,
        }
    }
}

pub async fn confirm(
    inv: &Inventory,
    tenant: &Tenant,
    actor: &str,
    req: ConfirmReservationRequest,
) -> Result<ConfirmReservationResponse> {
    let entries = parse_entries(Entries::Allocations, &req.allocations);
    let (id, entries) = change_target(&req.request_id, &req.name, entries)?;
    let change = Change::new(Op::Confirm, id, entries);
    let r = idempotent_change(
        inv,
        tenant,
        actor,
        &req.request_id,
        "ConfirmReservation",
        &req,
        &change,
    )
    .await?;
    Ok(ConfirmReservationResponse {
        reservation: Some(r),
    })
}

pub async fn release(
    inv: &Inventory,
    tenant: &Tenant,
    actor: &str,
    req: ReleaseReservationRequest,
) -> Result<ReleaseReservationResponse> {
    let entries = at_most(
        parse_entries(Entries::Release, &req.lines),
        "reason",
        &req.reason,
        500,
    );
    let (id, entries) = change_target(&req.request_id, &req.name, entries)?;
    let change = Change {
        reason: &req.reason,
        ..Change::new(Op::Release, id, entries)
    };
    let r = idempotent_change(
        inv,
        tenant,
        actor,
        &req.request_id,
        "ReleaseReservation",
        &req,
        &change,
    )
    .await?;
    Ok(ReleaseReservationResponse {
        reservation: Some(r),
    })
}

pub async fn consume(
    inv: &Inventory,
    tenant: &Tenant,
    actor: &str,
    req: ConsumeAllocationsRequest,
) -> Result<ConsumeAllocationsResponse> {
    let entries = parse_entries(Entries::Shipped, &req.shipped);
    let entries = at_most(entries, "reference", &req.reference, 200);
    let (id, entries) = change_target(&req.request_id, &req.name, entries)?;
    let change = Change {
        reference: &req.reference,
        ..Change::new(Op::Consume, id, entries)
    };
    let r = idempotent_change(
        inv,
        tenant,
        actor,
        &req.request_id,
        "ConsumeAllocations",
        &req,
        &change,
    )
    .await?;
    Ok(ConsumeAllocationsResponse {
        reservation: Some(r),
    })
}

pub async fn extend(
    inv: &Inventory,
    tenant: &Tenant,
    actor: &str,
    req: ExtendReservationRequest,
) -> Result<ExtendReservationResponse> {
    // A renewal alone (a `ttl`, no lines) adds nothing.
    let mut v = Violations::new();
    let entries = v.merge(match (&req.ttl, req.lines.is_empty()) {
        (Some(_), true) => Ok(vec![]),
        _ => parse_entries(Entries::Extension, &req.lines),
    });
    let ttl = (req.ttl.as_ref()).and_then(|d| v.check("ttl", check_ttl(d)));
    let entries = v.into_result(entries.unwrap_or_default());
    let entries = at_most(entries, "reason", &req.reason, 500);
    let (id, entries) = change_target(&req.request_id, &req.name, entries)?;
    let change = Change {
        reason: &req.reason,
        renew: ttl.map(|ttl| now_ms() + ttl.as_millis() as i64),
        ..Change::new(Op::Extend, id, entries)
    };
    let r = idempotent_change(
        inv,
        tenant,
        actor,
        &req.request_id,
        "ExtendReservation",
        &req,
        &change,
    )
    .await?;
    Ok(ExtendReservationResponse {
        reservation: Some(r),
    })
}

/// `entries`, with a violation more when `text` (a reason, a reference,
/// kept with the record) is longer than `max` bytes.
fn at_most(
    entries: std::result::Result<Vec<Line>, Violations>,
    field: &str,
    text: &str,
    max: usize,
) -> std::result::Result<Vec<Line>, Violations> {
    if text.len() <= max {
        return entries;
    }
    let mut v = entries.err().unwrap_or_default();
    v.at_most(field, text, max);
    Err(v)
}

/// Checks an extension against the record and the catalog: a confirmed
/// reservation takes units at named nodes only (they are allocated at
/// once), SKUs and nodes must exist. Returns what it must leave to
/// others: its channel's share, other backorders' units.
async fn extension_limit(
    tx: &mut sqlx::PgConnection,
    tenant: &Tenant,
    r: &Reservation,
    state: ReservationState,
    entries: &[Line],
) -> Result<gate::Leave> {
    let mut v = Violations::new();
    if state == ReservationState::Confirmed {
        for (i, e) in entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.node.is_empty())
        {
            v.add(
                format!("lines[{i}].node_id"),
                format!(
                    "is required: {} is confirmed, so added units are allocated at once ({})",
                    r.name, e.sku
                ),
            );
        }
    }
    let mut skus: Vec<String> = entries.iter().map(|e| e.sku.clone()).collect();
    skus.sort();
    skus.dedup();
    let items = repo::items::existing(&mut *tx, tenant, &skus)
        .await?
        .into_keys()
        .collect();
    let named = entries.iter().map(|e| e.node.clone()).collect();
    let nodes = named_nodes(tx, tenant, named).await?;
    let lines = || entries.iter().map(|e| (e.sku.as_str(), e.node.as_str()));
    v.0.extend(unknown_lines("lines", lines(), &items, &nodes).0);
    v.into_result(())?;
    disabled_lines("lines", lines(), &nodes)?;
    let mut leave = gate::Leave {
        channel: r.channel.clone(),
        backorders_of: r.backorders_of.clone(),
        rule: None,
    };
    if !r.channel.is_empty() {
        let rule = repo::rules::channel_rule(&mut *tx, tenant, &r.channel).await?;
        let nodes = entries.iter().map(|e| e.node.as_str());
        outside_pool("lines", rule.as_ref(), nodes)?;
        leave.rule = rule.as_ref().map(channel_limit);
    }
    Ok(leave)
}

async fn idempotent_change<Req: Message>(
    inv: &Inventory,
    tenant: &Tenant,
    actor: &str,
    request_id: &str,
    method: &str,
    req: &Req,
    change: &Change<'_>,
) -> Result<Reservation> {
    // The stored answer is the reservation; the response types wrap it.
    inv.retrying(tenant, || async {
        let (mut tx, rid) = match inv
            .begin::<Req, Reservation>(tenant, request_id, method, req)
            .await?
        {
            Begin::Replay(r) => return Ok(r),
            Begin::Tx(tx, rid) => (tx, rid),
        };
        match apply_change(inv, &mut tx, tenant, actor, rid.as_str(), change).await? {
            Applied::Done(r) => inv.finish(tx, tenant, &rid, r).await,
            Applied::Refused(e) => {
                // Keep what was learnt (an expiry), not the claim.
                oms_runtime::idempotency::release(&mut tx, tenant, &rid).await?;
                crate::ops::commit(tx).await?;
                Err(e)
            }
        }
    })
    .await
}

/// Expires those of `ids` (one tenant's, read due by the sweep) that are
/// still active and due, in one transaction and one gate script: a flash
/// sale's abandoned carts come back a batch at a time, not a transaction
/// each. Each expires as a change that finds it due would expire it
/// (`record`). How many expired.
pub(super) async fn expire_many(inv: &Inventory, tenant: &Tenant, ids: &[String]) -> Result<usize> {
    inv.retrying(tenant, || async {
        let mut tx = inv.pool.begin().await?;
        lock::shared(&mut tx, tenant).await?;
        let Some((now, mut due)) = repo::reservations::lock_due(&mut tx, tenant, ids).await?
        else {
            return Ok(0);
        };
        // Due by the database's clock (`now`), for the record and the gate
        // alike (the gate keeps the record's expiry): the gate expires
        // exactly these, so they are written first. What the database
        // refuses then fails the batch before the gate is changed, not
        // after (a gate changed for nothing is rebuilt).
        let mut released = Vec::with_capacity(due.len());
        for (r, _) in &mut due {
            released.push(expire_lines(r));
            r.state = ReservationState::Expired as i32;
            r.update_time = Some(to_timestamp(now));
        }
        let mut freed: BTreeMap<(&str, &str), i64> = BTreeMap::new();
        for (k, units) in due.iter().flat_map(|(_, holds)| holds) {
            *freed.entry(gate::split_hold(k)).or_default() += units;
        }
        let records: Vec<&Reservation> = due.iter().map(|(r, _)| r).collect();
        repo::reservations::save_expired(&mut tx, tenant, &records, &freed, now).await?;
        let events = records
            .iter()
            .zip(released)
            .map(|(r, units)| (r.name.clone(), expired_event(r, units)))
            .collect();
        crate::ops::emit_many(&mut tx, tenant, "", events).await?;
        let known: Vec<(&str, &Holds)> = due
            .iter()
            .map(|(r, holds)| (r.reservation_id.as_str(), holds))
            .collect();
        let mark = crate::ops::changing_gate();
        let out = inv.gate.expire(tenant, &known, now.timestamp_millis()).await?;
        match out.status.as_str() {
            "OK" => {}
            // As for one reservation (`apply_change`): rebuild the gate
            // from the record, then try again.
            "DIVERGED" | "NOT_FOUND" => {
                mark.unchanged();
                if out.status == "DIVERGED" {
                    tracing::warn!(reservation = %out.id, "the gate and the record disagree on a reservation");
                }
                crate::ops::reconcile::invalidate(inv, tenant).await?;
                return Err(GateError::NotReady.into());
            }
            other => {
                mark.unchanged();
                return Err(GateError::Answer(serde::de::Error::custom(format!(
                    "gate status {other}"
                )))
                .into());
            }
        }
        if out.expired.len() != records.len() {
            // The gate changed some: the run's end drops it.
            return Err(GateError::Answer(serde::de::Error::custom(format!(
                "the gate expired {} of {} reservations due",
                out.expired.len(),
                records.len()
            )))
            .into());
        }
        crate::ops::give_back_later(inv, tenant, out.given_back(), out.epoch.clone()).await?;
        crate::ops::commit(tx).await?;
        Ok(records.len())
    })
    .await
}

/// An expired reservation's lines: each released whole. Returns the
/// units they held, per SKU and node (none: the network), which the
/// expiry gives back.
fn expire_lines(r: &mut Reservation) -> Vec<Allocation> {
    let mut freed: BTreeMap<String, i64> = BTreeMap::new();
    for l in &mut r.lines {
        let held = l.quantity - l.quantity_released;
        if held > 0 {
            *freed.entry(gate::hold_key(&l.sku, &l.node_id)).or_default() += held;
        }
        l.quantity_released = l.quantity;
    }
    as_allocations(&freed)
}

/// The event of an expiry that gave back `released`. (Before 2026-12-05
/// its `released` was empty, so a follower of the feed learnt of no unit
/// coming back.)
fn expired_event(r: &Reservation, released: Vec<Allocation>) -> inventory_event::Kind {
    inventory_event::Kind::ReservationReleased(ReservationReleased {
        reservation: Some(r.clone()),
        released,
        reason: "expired".into(),
    })
}

enum Applied {
    Done(Reservation),
    /// Refused, but the transaction holds a state change worth keeping.
    Refused(Error),
}

async fn apply_change(
    inv: &Inventory,
    tx: &mut sqlx::PgConnection,
    tenant: &Tenant,
    actor: &str,
    request_id: &str,
    c: &Change<'_>,
) -> Result<Applied> {
    let name = format!("reservations/{}", c.id);
    let Some((mut r, consumed, holds)) = repo::reservations::lock(tx, tenant, c.id).await? else {
        return Err(Error::not_found("reservation", name));
    };
    let state = ReservationState::try_from(r.state).unwrap_or_default();
    if !matches!(
        state,
        ReservationState::Active | ReservationState::Confirmed
    ) {
        return Err(not_live(&name, state));
    }
    if c.op == Op::Consume && state == ReservationState::Active {
        // Before, the gate's answer said "… is active" under the reason
        // RESERVATION_NOT_ACTIVE.
        return Err(Error::precondition(
            "RESERVATION_NOT_CONFIRMED",
            name.clone(),
            format!(
                "{name} is active, not confirmed: only allocations ship; confirm it at its nodes first (ConfirmReservation)"
            ),
        ));
    }
    let mut skus: Vec<String> = r.lines.iter().map(|l| l.sku.clone()).collect();
    skus.sort();
    skus.dedup();
    if c.op == Op::Confirm && !r.channel.is_empty() {
        let rule = repo::rules::channel_rule(&mut *tx, tenant, &r.channel).await?;
        let nodes = c.entries.iter().map(|e| e.node.as_str());
        outside_pool("allocations", rule.as_ref(), nodes)?;
    }
    if c.op == Op::Consume {
        // Refused here, not by the shipment's movements after the gate
        // consumed the units (which would cost the tenant a rebuild).
        let items = repo::items::existing(&mut *tx, tenant, &skus).await?;
        movement::check_shipped(Entries::Shipped.field(), &c.entries, &items).into_result(())?;
    }
    let known = gate::Known {
        id: c.id,
        skus: &skus,
        state: repo::reservations::state_db(state),
        holds: &holds,
    };
    let mark = crate::ops::changing_gate();
    let out = if c.op == Op::Extend {
        if c.renew.is_some() && state == ReservationState::Confirmed {
            return Err(Error::precondition(
                "RESERVATION_CONFIRMED",
                name.clone(),
                format!("{name} is confirmed: it no longer expires, so there is no ttl to renew"),
            ));
        }
        let leave = extension_limit(tx, tenant, &r, state, &c.entries).await?;
        inv.gate
            .extend(tenant, &known, &c.entries, &leave, c.renew, now_ms())
            .await?
    } else {
        inv.gate
            .change(tenant, c.op, &known, &c.entries, now_ms())
            .await?
    };
    crate::ops::give_back_later(inv, tenant, out.given_back(), out.epoch.clone()).await?;
    let new_state = repo::reservations::state_from(&out.state);
    // Every answer but these is a refusal the script made before changing
    // anything (found expired on the way, it expired the reservation).
    let expired = out.status == "STATE" && new_state == ReservationState::Expired;
    if out.status != "OK" && !expired {
        mark.unchanged();
    }
    match out.status.as_str() {
        "OK" => {}
        "STATE" if expired => {
            // Found expired on the way: record that, refuse the change.
            let released = record(
                inv,
                tx,
                tenant,
                &mut r,
                &out.holds,
                consumed,
                new_state,
                c,
                request_id,
                actor,
                &BTreeMap::new(),
            )
            .await;
            released?;
            return Ok(Applied::Refused(Error::precondition(
                "RESERVATION_EXPIRED",
                name.clone(),
                format!("{name} expired"),
            )));
        }
        "STATE" => return Err(not_live(&name, new_state)),
        // The record is the truth; the gate disagrees with it: rebuild
        // from it, then try again. DIVERGED: the gate is ahead of the
        // record (a change of this reservation reached Redis and its
        // replica died before the commit; the caller's retry lands here).
        // NOT_FOUND: the record is live but Redis lost it.
        "DIVERGED" | "NOT_FOUND" => {
            if out.status == "DIVERGED" {
                tracing::warn!(reservation = %name, gate = %out.state, record = ?state, "the gate and the record disagree on a reservation");
            }
            crate::ops::reconcile::invalidate(inv, tenant).await?;
            return Err(GateError::NotReady.into());
        }
        "SHORT" => {
            let short: Vec<Short> = serde_json::from_value(out.detail).map_err(GateError::from)?;
            let channel = r.channel.clone();
            return Err(Error::Insufficient { short, channel });
        }
        "MISMATCH" => {
            let d = out.detail;
            return Err(Violations::one(
                "allocations",
                format!(
                    "must cover exactly what is reserved: {} of items/{} held {}, allocations give {}",
                    d["held"],
                    d["sku"].as_str().unwrap_or_default(),
                    place(d["node"].as_str().unwrap_or("")),
                    d["want"]
                ),
            )
            .into());
        }
        "TOO_MUCH" => {
            let d = &out.detail;
            let (reason, what) = if c.op == Op::Consume {
                ("CONSUME_EXCEEDS_ALLOCATED", "allocated")
            } else {
                ("RELEASE_EXCEEDS_HELD", "held")
            };
            return Err(Error::precondition(
                reason,
                name,
                format!(
                    "{} of items/{} {} {}; {} asked",
                    d["held"],
                    d["sku"].as_str().unwrap_or_default(),
                    what,
                    place(d["node"].as_str().unwrap_or("")),
                    d["want"]
                ),
            ));
        }
        other => {
            return Err(GateError::Answer(serde::de::Error::custom(format!(
                "gate status {other}"
            )))
            .into());
        }
    }
    let taken: BTreeMap<String, i64> =
        serde_json::from_value(out.detail.clone()).unwrap_or_default();
    let consumed = consumed || c.op == Op::Consume;
    record(
        inv, tx, tenant, &mut r, &out.holds, consumed, new_state, c, request_id, actor, &taken,
    )
    .await?;
    Ok(Applied::Done(r))
}

/// A change refused because the reservation ended: `RESERVATION_EXPIRED`
/// when it expired (as when it is found past its time before the sweep;
/// `RESERVATION_NOT_ACTIVE` before 2026-12-04), `RESERVATION_NOT_ACTIVE`
/// otherwise.
fn not_live(name: &str, state: ReservationState) -> Error {
    let s = repo::reservations::state_db(state);
    let reason = match state {
        ReservationState::Expired => "RESERVATION_EXPIRED",
        _ => "RESERVATION_NOT_ACTIVE",
    };
    Error::precondition(reason, name, format!("{name} is {s}"))
}

/// Writes a changed reservation: its document, holds, event, and for
/// shipments the ledger.
#[allow(clippy::too_many_arguments)]
async fn record(
    inv: &Inventory,
    tx: &mut sqlx::PgConnection,
    tenant: &Tenant,
    r: &mut Reservation,
    holds: &Holds,
    consumed: bool,
    state: ReservationState,
    c: &Change<'_>,
    request_id: &str,
    actor: &str,
    taken: &BTreeMap<String, i64>,
) -> Result<()> {
    let now = Utc::now();
    let mut moved: Vec<&Line> = Vec::new();
    let mut expired = Vec::new();
    match (c.op, state) {
        (_, ReservationState::Expired) => expired = expire_lines(r),
        (Op::Confirm, _) => {
            for e in &c.entries {
                allocate(&mut r.lines, e);
            }
            crate::ops::lot_expiry::date_allocations(tx, tenant, std::slice::from_mut(r)).await?;
        }
        (Op::Release, _) => {
            // Each hold the gate took from is released on the lines it
            // belongs to: allocations at its node (confirmed), or lines of
            // its node, or of the network when it has none (active). A
            // line counts both as released: its quantity less what it
            // released is what it holds or allocated.
            for (k, t) in taken {
                let (sku, node) = gate::split_hold(k);
                let mut left = *t;
                for l in r.lines.iter_mut().filter(|l| l.sku == sku) {
                    for a in l.allocations.iter_mut().filter(|a| a.node_id == node) {
                        let x = left.min(a.quantity - a.quantity_consumed);
                        a.quantity -= x;
                        l.quantity_released += x;
                        left -= x;
                    }
                }
                for l in r
                    .lines
                    .iter_mut()
                    .filter(|l| l.sku == sku && l.node_id == node)
                {
                    let x = left.min(l.quantity - l.quantity_released);
                    l.quantity_released += x;
                    left -= x;
                }
            }
        }
        (Op::Consume, _) => {
            // Dated as of the shipment, before the units count as shipped:
            // an allocation shipped in full keeps that date (reads restate
            // it only while units are left to ship).
            crate::ops::lot_expiry::date_allocations(tx, tenant, std::slice::from_mut(r)).await?;
            for (k, t) in taken {
                let (sku, node) = gate::split_hold(k);
                let mut left = *t;
                for a in r
                    .lines
                    .iter_mut()
                    .flat_map(|l| l.allocations.iter_mut())
                    .filter(|a| a.sku == sku && a.node_id == node)
                {
                    let x = left.min(a.quantity - a.quantity_consumed);
                    a.quantity_consumed += x;
                    left -= x;
                }
            }
            // One shipment per entry, with its lot and serial numbers: the
            // gate took exactly what the entries name, per SKU and node.
            moved = c.entries.iter().collect();
        }
        (Op::Extend, _) => {
            for (k, q) in taken {
                let (sku, node) = gate::split_hold(k);
                extend_lines(r, sku, node, *q, state == ReservationState::Confirmed);
            }
            if let Some(ms) = c.renew {
                r.expire_time = chrono::DateTime::from_timestamp_millis(ms).map(to_timestamp);
            }
        }
    }
    r.state = state as i32;
    if matches!(
        state,
        ReservationState::Confirmed | ReservationState::Released | ReservationState::Consumed
    ) {
        // It no longer expires; an expired one keeps the time it did.
        r.expire_time = None;
    }
    r.update_time = Some(to_timestamp(now));
    repo::reservations::save(tx, tenant, r, holds, consumed, now).await?;
    // Shipped units leave on-hand; what the node can promise is unchanged
    // (the allocation they leave held the same units) unless they leave an
    // expired lot (see `Origin::Shipment`).
    let lots: Vec<_> = moved
        .iter()
        .map(|e| (e.node.as_str(), e.sku.as_str(), e.lot.as_str()))
        .collect();
    repo::stock::lock_for_movements(tx, tenant, &lots).await?;
    for e in moved {
        let m = StockMovement {
            kind: MovementKind::Shipment as i32,
            node_id: e.node.clone(),
            sku: e.sku.clone(),
            lot: e.lot.clone(),
            serial_numbers: e.serials.clone(),
            quantity: -e.q,
            reference: if c.reference.is_empty() {
                r.name.clone()
            } else {
                c.reference.to_owned()
            },
            reason: "shipment of allocated units".into(),
            // One shipment: every line left at one moment.
            occur_time: Some(to_timestamp(now)),
            ..Default::default()
        };
        crate::ops::movements::apply(inv, tx, tenant, m, actor, request_id, Origin::Shipment)
            .await?;
    }
    let kind = match (c.op, state) {
        (_, ReservationState::Expired) => expired_event(r, expired),
        (Op::Confirm, _) => inventory_event::Kind::ReservationConfirmed(ReservationConfirmed {
            reservation: Some(r.clone()),
        }),
        (Op::Extend, _) => inventory_event::Kind::ReservationExtended(ReservationExtended {
            reservation: Some(r.clone()),
            added: as_allocations(taken),
            reason: c.reason.to_owned(),
        }),
        (Op::Consume, _) => inventory_event::Kind::AllocationsConsumed(AllocationsConsumed {
            reservation: Some(r.clone()),
            consumed: as_allocations(taken),
        }),
        _ => inventory_event::Kind::ReservationReleased(ReservationReleased {
            reservation: Some(r.clone()),
            released: as_allocations(taken),
            reason: c.reason.to_owned(),
        }),
    };
    emit(tx, tenant, &r.name, request_id, kind).await
}

/// Puts a confirmation's allocation on the lines of its SKU that hold its
/// units: lines reserved at its node first, then lines reserved in the
/// network, each up to what it holds unallocated, so that each line's
/// allocations add up to its quantity less what it released. (The gate
/// checked that the allocations cover the holds exactly; a remainder,
/// which that leaves none of, would go on the SKU's first line.)
fn allocate(lines: &mut [ReservationLine], e: &Line) {
    let mut left = e.q;
    for network in [false, true] {
        for l in lines
            .iter_mut()
            .filter(|l| l.sku == e.sku && l.node_id == if network { "" } else { e.node.as_str() })
        {
            let allocated: i64 = l.allocations.iter().map(|a| a.quantity).sum();
            let x = left.min(l.quantity - l.quantity_released - allocated);
            if x > 0 {
                add_allocation(l, &e.node, x);
                left -= x;
            }
        }
    }
    if let (true, Some(l)) = (left > 0, lines.iter_mut().find(|l| l.sku == e.sku)) {
        add_allocation(l, &e.node, left);
    }
}

/// `q` more units allocated at `node` on a line.
fn add_allocation(line: &mut ReservationLine, node: &str, q: i64) {
    match line.allocations.iter_mut().find(|a| a.node_id == node) {
        Some(a) => a.quantity += q,
        None => line.allocations.push(Allocation {
            sku: line.sku.clone(),
            node_id: node.to_owned(),
            quantity: q,
            ..Default::default()
        }),
    }
}

/// Adds `q` units of `sku` at `node` to a reservation's lines: to a
/// confirmed one as an allocation on the SKU's line, to an active one on
/// the line of that SKU and node.
fn extend_lines(r: &mut Reservation, sku: &str, node: &str, q: i64, allocated: bool) {
    let i = r
        .lines
        .iter()
        .position(|l| l.sku == sku && (allocated || l.node_id == node))
        .unwrap_or_else(|| {
            r.lines.push(ReservationLine {
                sku: sku.to_owned(),
                node_id: if allocated {
                    String::new()
                } else {
                    node.to_owned()
                },
                ..Default::default()
            });
            r.lines.len() - 1
        });
    let line = &mut r.lines[i];
    line.quantity += q;
    if allocated {
        add_allocation(line, node, q);
    }
}

fn as_allocations(taken: &BTreeMap<String, i64>) -> Vec<Allocation> {
    taken
        .iter()
        .map(|(k, q)| {
            let (sku, node) = gate::split_hold(k);
            Allocation {
                sku: sku.to_owned(),
                node_id: node.to_owned(),
                quantity: *q,
                ..Default::default()
            }
        })
        .collect()
}
