//! Status events from WMS adapters, applied exactly once: each event id's
//! answer is stored with the change it made, so a resent event gets the
//! same answer and changes nothing again. A refused event's answer is
//! stored too: resending it cannot make it succeed later by accident.
use crate::service::{Fulfillment, db, emit};
use crate::work::order_id;
use crate::{repo, state};
use chrono::Utc;
use oms_kernel::Tenant;
use oms_proto::fulfillment::{
    EventAck, FulfillmentOrder, FulfillmentState as S, FulfillmentStateChanged, StatusEvent,
    status_event::Kind as Ev, watch_fulfillment_events_response::Kind,
};
use oms_runtime::time::to_timestamp;
use std::collections::HashMap;
use tonic::Status;

fn refused(event_id: &str, why: impl Into<String>) -> EventAck {
    EventAck {
        event_id: event_id.to_owned(),
        accepted: false,
        error: why.into(),
    }
}

/// Applies `ev` from an adapter serving `nodes` of `tenant`. Err only when
/// the database fails (the adapter should resend).
pub async fn apply(
    r: &Fulfillment,
    tenant: &Tenant,
    nodes: &[String],
    ev: StatusEvent,
) -> Result<EventAck, Status> {
    let eid = ev.event_id.clone();
    if eid.trim().is_empty() || eid.len() > 200 {
        // Nothing to key the answer by: answer without storing.
        return Ok(refused(
            &eid,
            "event_id is required (at most 200 characters)",
        ));
    }
    let mut tx = r.pool.begin().await.map_err(db)?;
    // The order's row lock serialises events about it, repeats included.
    let id = order_id("fulfillment_order", &ev.fulfillment_order).ok();
    let fo = match id {
        Some(id) => repo::order(&mut *tx, tenant, id, true).await.map_err(db)?,
        None => None,
    };
    if let Some(ack) = repo::event_ack(&mut *tx, tenant, &eid).await.map_err(db)? {
        return Ok(ack);
    }
    let now = Utc::now();
    let outcome = match (id, fo) {
        _ if !nodes.contains(&ev.node_id) => Err(format!(
            "node {:?} is not served by this adapter (it said it serves {})",
            ev.node_id,
            nodes.join(", ")
        )),
        (Some(id), Some(mut fo)) if fo.node_id == ev.node_id => {
            let from = fo.state();
            match change(&mut fo, &ev) {
                Ok(()) => {
                    fo.update_time = Some(to_timestamp(now));
                    repo::save_order(&mut tx, tenant, id, &fo, now)
                        .await
                        .map_err(db)?;
                    emit(
                        &mut tx,
                        tenant,
                        &fo,
                        &eid,
                        Kind::StateChanged(FulfillmentStateChanged {
                            from_state: from as i32,
                            to_state: fo.state,
                            status: Some(ev.clone()),
                        }),
                    )
                    .await?;
                    Ok(())
                }
                Err(e) => Err(e),
            }
        }
        (Some(_), Some(fo)) => Err(format!(
            "{} is at node {}, not {}",
            fo.name, fo.node_id, ev.node_id
        )),
        _ => Err(format!(
            "unknown fulfillment order {:?}",
            ev.fulfillment_order
        )),
    };
    let ack = match outcome {
        Ok(()) => EventAck {
            event_id: eid.clone(),
            accepted: true,
            error: String::new(),
        },
        Err(why) => refused(&eid, why),
    };
    repo::insert_event_ack(&mut tx, tenant, &ack, now)
        .await
        .map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(ack)
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
        *per_line.entry(l.line_id.as_str()).or_default() += l.quantity;
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
