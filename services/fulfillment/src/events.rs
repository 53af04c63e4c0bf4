//! Status events from WMS adapters, applied exactly once: each event id's
//! answer is stored with the change it made, so a resent event gets the
//! same answer and changes nothing again. A refused event's answer is
//! stored too: resending it cannot make it succeed later by accident.
use crate::service::{Fulfillment, db, emit_many};
use crate::work::order_id;
use crate::{repo, state};
use chrono::{DateTime, Utc};
use oms_kernel::Tenant;
use oms_proto::fulfillment::{
    EventAck, FulfillmentOrder, FulfillmentState as S, FulfillmentStateChanged, StatusEvent,
    status_event::Kind as Ev, watch_fulfillment_events_response::Kind,
};
use std::collections::{HashMap, HashSet};
use tonic::Status;
use uuid::Uuid;

fn refused(event_id: &str, why: impl Into<String>) -> EventAck {
    EventAck {
        event_id: event_id.to_owned(),
        accepted: false,
        error: why.into(),
    }
}

/// The answer to an event that was applied (Ok) or refused (Err: why).
pub fn answer_of(event_id: &str, outcome: Result<(), String>) -> EventAck {
    match outcome {
        Ok(()) => EventAck {
            event_id: event_id.to_owned(),
            accepted: true,
            error: String::new(),
        },
        Err(why) => refused(event_id, why),
    }
}

/// Whether an answer can be stored under this id.
fn keyed(event_id: &str) -> bool {
    !event_id.trim().is_empty() && event_id.len() <= 200
}

fn unkeyed(event_id: &str) -> EventAck {
    refused(event_id, "event_id is required (at most 200 characters)")
}

/// An adapter event handled on its own (a receipt, a note).
pub enum Once {
    /// Seen before (or without an id to key it by): the answer to send.
    Answered(EventAck),
    /// New: apply it in this transaction, then [`answer`].
    Apply(sqlx::Transaction<'static, sqlx::Postgres>),
}

/// Starts handling the event `event_id` exactly once.
pub async fn once(r: &Fulfillment, tenant: &Tenant, event_id: &str) -> Result<Once, Status> {
    if !keyed(event_id) {
        return Ok(Once::Answered(unkeyed(event_id)));
    }
    let mut tx = r.pool.begin().await.map_err(db)?;
    // The same event resent on a second stream while the first still
    // applies it waits here, then finds the first answer.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1), hashtext($2))")
        .bind(tenant.as_str())
        .bind(event_id)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    match repo::event_acks(&mut *tx, tenant, &[event_id])
        .await
        .map_err(db)?
        .remove(event_id)
    {
        Some(ack) => Ok(Once::Answered(ack)),
        None => Ok(Once::Apply(tx)),
    }
}

/// Stores the answer with what applying the event changed, and commits.
pub async fn answer(
    mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
    tenant: &Tenant,
    ack: EventAck,
) -> Result<EventAck, Status> {
    repo::insert_event_acks(&mut tx, tenant, std::slice::from_ref(&ack), Utc::now())
        .await
        .map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(ack)
}

/// Applies `events` from an adapter serving `nodes` of `tenant`, in order,
/// in one transaction, and answers each. Err only when the database fails
/// (then nothing of the batch is applied and the adapter resends it).
///
/// The fulfillment orders they touch are locked in id order, so two
/// streams reporting about the same orders cannot deadlock.
pub async fn apply(
    r: &Fulfillment,
    tenant: &Tenant,
    nodes: &[String],
    events: Vec<StatusEvent>,
) -> Result<Vec<EventAck>, Status> {
    if !events.iter().any(|ev| keyed(&ev.event_id)) {
        return Ok(events.iter().map(|ev| unkeyed(&ev.event_id)).collect());
    }
    let mut ids: Vec<Uuid> = events
        .iter()
        .filter_map(|ev| order_id("fulfillment_order", &ev.fulfillment_order).ok())
        .collect();
    ids.sort();
    ids.dedup();
    let event_ids: Vec<&str> = events.iter().map(|ev| ev.event_id.as_str()).collect();
    let mut tx = r.pool.begin().await.map_err(db)?;
    let mut orders = repo::orders_locked(&mut tx, tenant, &ids)
        .await
        .map_err(db)?;
    let mut answered = repo::event_acks(&mut *tx, tenant, &event_ids)
        .await
        .map_err(db)?;
    let now = Utc::now();
    let mut batch = Batch::default();
    let mut acks = Vec::with_capacity(events.len());
    for ev in events {
        if !keyed(&ev.event_id) {
            // Nothing to key the answer by: answered, not stored.
            acks.push(unkeyed(&ev.event_id));
            continue;
        }
        if let Some(ack) = answered.get(&ev.event_id) {
            acks.push(ack.clone());
            continue;
        }
        let ack = answer_of(&ev.event_id, batch.apply(&mut orders, nodes, &ev, now));
        answered.insert(ev.event_id.clone(), ack.clone());
        batch.acks.push(ack.clone());
        acks.push(ack);
    }
    let saved: Vec<(Uuid, &FulfillmentOrder)> = batch
        .changed
        .iter()
        .filter_map(|id| orders.get(id).map(|fo| (*id, fo)))
        .collect();
    repo::save_orders(&mut tx, tenant, &saved, now)
        .await
        .map_err(db)?;
    emit_many(&mut tx, tenant, &batch.emitted).await?;
    repo::insert_event_acks(&mut tx, tenant, &batch.acks, now)
        .await
        .map_err(db)?;
    tx.commit().await.map_err(db)?;
    if !batch.emitted.is_empty() {
        r.waker.wake();
    }
    Ok(acks)
}

/// What a batch changed, to be written at its end.
#[derive(Default)]
struct Batch {
    /// Fulfillment orders changed.
    changed: HashSet<Uuid>,
    /// Feed events: the order after the change, the adapter's event id,
    /// what happened.
    emitted: Vec<(FulfillmentOrder, String, Kind)>,
    /// Answers to store.
    acks: Vec<EventAck>,
}

impl Batch {
    /// Applies one event to the locked orders, or says why it cannot.
    fn apply(
        &mut self,
        orders: &mut HashMap<Uuid, FulfillmentOrder>,
        nodes: &[String],
        ev: &StatusEvent,
        now: DateTime<Utc>,
    ) -> Result<(), String> {
        if !nodes.contains(&ev.node_id) {
            return Err(format!(
                "node {:?} is not served by this adapter (it said it serves {})",
                ev.node_id,
                nodes.join(", ")
            ));
        }
        let unknown = || format!("unknown fulfillment order {:?}", ev.fulfillment_order);
        let id = order_id("fulfillment_order", &ev.fulfillment_order).map_err(|_| unknown())?;
        let fo = orders.get_mut(&id).ok_or_else(unknown)?;
        if fo.node_id != ev.node_id {
            return Err(format!(
                "{} is at node {}, not {}",
                fo.name, fo.node_id, ev.node_id
            ));
        }
        let from = fo.state();
        let mut next = fo.clone();
        change(&mut next, ev)?;
        if next == *fo {
            // A report of where it already is: answered, nothing written.
            return Ok(());
        }
        state::touch(&mut next, now);
        *fo = next;
        self.changed.insert(id);
        self.emitted.push((
            fo.clone(),
            ev.event_id.clone(),
            Kind::StateChanged(FulfillmentStateChanged {
                from_state: from as i32,
                to_state: fo.state,
                status: Some(ev.clone()),
            }),
        ));
        Ok(())
    }
}

/// What `ev` does to `fo`, or why it cannot.
fn change(fo: &mut FulfillmentOrder, ev: &StatusEvent) -> Result<(), String> {
    let from = fo.state();
    let progress = |fo: &mut FulfillmentOrder, to: S| -> Result<(), String> {
        if let Some(to) = state::advance(from, to)? {
            fo.set_state(to);
        }
        Ok(())
    };
    match ev.kind.as_ref().ok_or("the event has no kind")? {
        Ev::Accepted(_) => progress(fo, S::Accepted),
        Ev::Picking(_) => progress(fo, S::Picking),
        Ev::Packed(_) => progress(fo, S::Packed),
        Ev::Delivered(_) if from != S::Shipped => Err(format!(
            "{} is {}: only shipped work can be delivered",
            fo.name,
            state::name(from)
        )),
        Ev::Delivered(_) => progress(fo, S::Delivered),
        Ev::Shipped(s) => {
            if !state::can_give_back(from) {
                return Err(format!(
                    "{} is {}: nothing left to ship",
                    fo.name,
                    state::name(from)
                ));
            }
            let shipment = s.shipment.clone().ok_or("shipped needs its shipment")?;
            if shipment.lines.is_empty() {
                return Err("the shipment has no lines".into());
            }
            take(fo, &shipment.lines, |line, q| line.quantity_shipped += q)?;
            fo.shipments.push(shipment);
            if fo.lines.iter().all(|l| l.quantity_shipped >= l.quantity) {
                fo.set_state(S::Shipped);
            }
            Ok(())
        }
        Ev::Rejected(x) => {
            if !state::can_give_back(from) {
                return Err(format!(
                    "{} is {} and cannot be rejected",
                    fo.name,
                    state::name(from)
                ));
            }
            fo.set_state(S::Rejected);
            fo.status_reason = format!("rejected: {}", x.reason);
            Ok(())
        }
        Ev::ShortPicked(x) => {
            if !state::can_give_back(from) {
                return Err(format!(
                    "{} is {}: too late to short-pick",
                    fo.name,
                    state::name(from)
                ));
            }
            if x.missing.is_empty() {
                return Err("short-picked needs the missing lines".into());
            }
            take(fo, &x.missing, |line, q| line.quantity -= q)?;
            fo.status_reason = format!("short-picked: {}", x.reason);
            if fo.lines.iter().all(|l| l.quantity == 0) {
                fo.set_state(S::Rejected);
            } else if fo.lines.iter().all(|l| l.quantity_shipped >= l.quantity) {
                fo.set_state(S::Shipped);
            }
            Ok(())
        }
        Ev::CancelAnswered(a) if a.cancelled => {
            if !state::can_give_back(from) {
                return Err(format!(
                    "{} is {} and cannot be cancelled",
                    fo.name,
                    state::name(from)
                ));
            }
            fo.set_state(S::Cancelled);
            Ok(())
        }
        Ev::CancelAnswered(a) => {
            fo.status_reason = format!("cancel refused: {}", a.reason);
            Ok(())
        }
    }
}

/// Checks units reported per line against what is still open (ordered
/// minus shipped) and applies `apply` to each line.
fn take(
    fo: &mut FulfillmentOrder,
    reported: &[oms_proto::fulfillment::ShippedLine],
    apply: impl Fn(&mut oms_proto::fulfillment::FulfillmentLine, i64),
) -> Result<(), String> {
    let mut per_line: HashMap<&str, i64> = HashMap::new();
    for l in reported {
        if l.quantity <= 0 {
            return Err(format!("line {:?}: quantity must be positive", l.line_id));
        }
        // Saturating: units beyond i64 are beyond what is open anyway.
        let q = per_line.entry(l.line_id.as_str()).or_default();
        *q = q.saturating_add(l.quantity);
    }
    for (line, q) in &per_line {
        let Some(fl) = fo.lines.iter().find(|x| x.line_id == *line) else {
            return Err(format!("{} has no line {line:?}", fo.name));
        };
        let open = fl.quantity - fl.quantity_shipped;
        if *q > open {
            return Err(format!("line {line:?}: {q} units reported, {open} open"));
        }
    }
    for (line, q) in per_line {
        if let Some(fl) = fo.lines.iter_mut().find(|x| x.line_id == line) {
            apply(fl, q);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oms_proto::fulfillment::{FulfillmentLine, ShippedLine};

    #[test]
    fn units_reported_beyond_i64_are_refused_not_overflowed() {
        let mut fo = FulfillmentOrder {
            name: "fulfillmentOrders/f1".into(),
            lines: vec![FulfillmentLine {
                line_id: "1".into(),
                quantity: 5,
                ..Default::default()
            }],
            ..Default::default()
        };
        let shipped = |quantity| ShippedLine {
            line_id: "1".into(),
            quantity,
            ..Default::default()
        };
        let err = take(&mut fo, &[shipped(i64::MAX), shipped(i64::MAX)], |_, _| {}).unwrap_err();
        assert!(err.ends_with("5 open"), "{err}");
        take(&mut fo, &[shipped(2), shipped(3)], |l, q| {
            l.quantity_shipped += q
        })
        .unwrap();
        assert_eq!(fo.lines[0].quantity_shipped, 5);
    }
}
