//! Rerouting what a node gave back (a rejected or cancelled fulfillment
//! order, or units it could not pick): the fulfillment feed notices it and enqueues
//! a `reroute:<key>` step carrying the `RerouteOrderRequest`; the step
//! gives the failed node's allocation back to inventory, asks routing for
//! a plan without that node (which also lowers its standing for those
//! SKUs), holds and allocates the units at the new nodes in a reservation
//! of their own, and releases fulfillment orders there. The order stays
//! where it is (RELEASED or PARTIALLY_SHIPPED); its lines' sourcing and
//! history say what moved and why.
use super::saga::{
    ACTOR, Saga, backoff, fresh_lots, fulfillment_orders, lock_for_step, moved_since_the_plan,
    release_request, reservation_id, reservation_name, routing_order, unplan_step, wait_for_stock,
};
use crate::changes::{Happened, record};
use crate::domain::{OrderState, lifecycle};
use crate::repo::{self, saga::Step};
use chrono::Utc;
use oms_kernel::{RequestId, Tenant};
use oms_proto::fulfillment::{FulfillmentOrder, FulfillmentState};
use oms_proto::inventory::{
    Allocation, ConfirmReservationRequest, CreateReservationRequest, ReservationLine,
};
use oms_proto::orders::{Order, OrderUpdated, order_event};
use oms_proto::routing::{PlanOrderRequest, RerouteOrderRequest, RerouteReason, RoutingLine};
use prost::Message;
use sqlx::PgConnection;
use std::time::Duration;
use tonic::Code;

/// How long units re-reserved at the new nodes are held before confirmation.
const REROUTE_HOLD: Duration = Duration::from_secs(15 * 60);

/// Whether `fo` gave up all its unshipped work: rejected by the WMS, or
/// cancelled at the node (the office's CancelFulfillmentOrder).
fn gave_up(fo: &FulfillmentOrder) -> bool {
    matches!(
        fo.state(),
        FulfillmentState::Rejected | FulfillmentState::Cancelled
    )
}

/// Units of each line (id, SKU, units) that `fo` gave back since `before`
/// (none: since it was created, every unit open): short-picked units, or
/// everything unshipped when it was rejected or cancelled.
pub fn given_back(
    before: Option<&FulfillmentOrder>,
    fo: &FulfillmentOrder,
) -> Vec<(String, String, i64)> {
    let open = |f: &FulfillmentOrder, line: &str| -> i64 {
        f.lines.iter().find(|l| l.line_id == line).map_or(0, |l| {
            if gave_up(f) {
                l.quantity_shipped
            } else {
                l.quantity
            }
        })
    };
    fo.lines
        .iter()
        .map(|l| {
            (
                l.line_id.clone(),
                l.sku.clone(),
                before.map_or(l.quantity, |b| open(b, &l.line_id)) - open(fo, &l.line_id),
            )
        })
        .filter(|(_, _, q)| *q > 0)
        .collect()
}

/// The reroute step for `back` (from [`given_back`]) of `fo`.
pub fn step(
    o: &Order,
    fo: &FulfillmentOrder,
    back: &[(String, String, i64)],
    key: &str,
) -> (String, Vec<u8>) {
    let mut order = routing_order(o);
    order.lines = lines_of(o, back);
    let reason = match fo.state() {
        FulfillmentState::Rejected => RerouteReason::Rejected,
        FulfillmentState::Cancelled => RerouteReason::Cancelled,
        _ => RerouteReason::ShortPicked,
    };
    let req = RerouteOrderRequest {
        request_id: format!("reroute-{}-{key}", fo.fulfillment_order_id),
        order: Some(order),
        failed_node_id: fo.node_id.clone(),
        reason: reason as i32,
        penalty: None,
    };
    (
        format!("{}{}-{key}", repo::saga::REROUTE, fo.fulfillment_order_id),
        req.encode_to_vec(),
    )
}

/// The step that places the backordered rest (`rest`: line id, SKU,
/// units) of a partial plan: a reroute from no node.
pub fn rest_step(
    o: &Order,
    rest: &[(String, String, i64)],
    decision_id: &str,
) -> (String, Vec<u8>) {
    let mut order = routing_order(o);
    order.lines = lines_of(o, rest);
    let req = RerouteOrderRequest {
        request_id: format!("rest-{decision_id}"),
        order: Some(order),
        failed_node_id: String::new(),
        reason: RerouteReason::Unspecified as i32,
        penalty: None,
    };
    (rest_step_name(decision_id), req.encode_to_vec())
}

/// The name of the [`rest_step`] of a decision.
pub fn rest_step_name(decision_id: &str) -> String {
    format!("{}rest-{decision_id}", repo::saga::REROUTE)
}

/// The fulfillment order a reroute step's key (`<fulfillment order id>-…`,
/// see [`step`]) is about; none for the rest of a partial plan.
fn failed_fulfillment(key: &str) -> Option<String> {
    let id = key.get(..36)?;
    uuid::Uuid::parse_str(id)
        .ok()
        .map(|_| format!("fulfillmentOrders/{id}"))
}

/// Routing lines for units (line id, SKU, units) of the order's lines.
fn lines_of(o: &Order, units: &[(String, String, i64)]) -> Vec<RoutingLine> {
    units
        .iter()
        .map(|(line, sku, q)| RoutingLine {
            line_id: line.clone(),
            sku: sku.clone(),
            quantity: *q,
            unit_price: o
                .lines
                .iter()
                .find(|l| l.line_id == *line)
                .and_then(|l| l.unit_price.clone()),
        })
        .collect()
}

impl Saga {
    pub(crate) async fn reroute(
        &self,
        tx: &mut PgConnection,
        tenant: &Tenant,
        s: &Step,
    ) -> anyhow::Result<()> {
        let req = RerouteOrderRequest::decode(s.payload.as_slice())?;
        let Some((mut o, held_from)) = lock_for_step(tx, tenant, s).await? else {
            return Ok(());
        };
        let from = lifecycle::state(&o);
        let failed = req.failed_node_id.clone();
        // The rest of a partial plan waits until the placed part is released
        // (and for a held order to come back). So do units a node gave back
        // before the order's release was recorded (its first attempt was
        // not; the WMS went on): dropped here, they stayed allocated at
        // that node and the order never shipped in full.
        let rest = failed.is_empty();
        let waiting = matches!(
            from,
            OrderState::Reserved | OrderState::Routed | OrderState::OnHold
        );
        if waiting {
            let soon = Utc::now() + chrono::Duration::seconds(1);
            repo::saga::wait(tx, s, "waiting for the order's release", soon).await?;
            return Ok(());
        }
        if !matches!(from, OrderState::Released | OrderState::PartiallyShipped) {
            // Cancelled (its release gives the stock back) or otherwise done.
            repo::saga::done(tx, s).await?;
            return Ok(());
        }
        let lines = req
            .order
            .as_ref()
            .map(|o| o.lines.clone())
            .unwrap_or_default();
        let key = s.step.trim_start_matches(repo::saga::REROUTE).to_owned();
        // 1. The failed node's allocation goes back (the rest of a partial
        // plan was given back when it was backordered).
        let units: Vec<(String, String, i64)> = lines
            .iter()
            .map(|l| (l.sku.clone(), failed.clone(), l.quantity))
            .collect();
        let reason = format!("{failed} gave the units back");
        let mut give_back =
            release_request(&reservation_name(&o), s.order_id, &key, &units, &reason);
        // They are held by that fulfillment order's reservation: the
        // order's, or a reroute's when the node took over rerouted work.
        if let Some(name) = failed_fulfillment(&key)
            && let Some(fo) = repo::feeds::fulfillments(tx, tenant, s.order_id)
                .await?
                .into_iter()
                .find(|f| f.name == name && !f.reservation.is_empty())
        {
            give_back.name = fo.reservation;
        }
        let given_back = if rest {
            Ok(())
        } else {
            self.peers
                .inventory(tenant)
                .release_reservation(give_back)
                .await
                .map(|_| ())
        };
        match given_back {
            Ok(()) => {}
            Err(st) if matches!(st.code(), Code::NotFound | Code::FailedPrecondition) => {}
            Err(st) => {
                self.retry_failed(tx, s, &st).await?;
                return Ok(());
            }
        }
        if o.cancel_requested {
            // The order's cancel was asked meanwhile: the units are
            // cancelled, not placed again (a rest's were cancelled with the
            // request).
            if !rest {
                let by_line: Vec<(String, i64)> = lines
                    .iter()
                    .map(|l| (l.line_id.clone(), l.quantity))
                    .collect();
                lifecycle::cancelled_at(&mut o, &failed, &by_line);
                let work = repo::feeds::fulfillments(tx, tenant, s.order_id).await?;
                let per_line = super::fulfillment_feed::progress(&work);
                let why = format!("{failed} gave the units up; the order's cancel was asked");
                let to = lifecycle::progressed(&mut o, &per_line)
                    .map_err(|r| anyhow::anyhow!(r.message))?
                    .unwrap_or(from);
                let happened = Happened::state_changed(from, to, why);
                record(
                    tx, tenant, s.order_id, &mut o, held_from, from, ACTOR, "", happened,
                )
                .await?;
            }
            repo::saga::done(tx, s).await?;
            return Ok(());
        }
        // 2. A plan without that node. Its request id holds until a plan
        // proves unusable (no node can take the work yet, or its stock moved
        // before it was held): then the next attempt asks afresh. A retry
        // after the units were held carries on with the same decision, so
        // nothing is held or released twice.
        let mut fresh = req.clone();
        fresh.request_id =
            RequestId::derived("reroute", format!("{}-{}", req.request_id, s.attempts + 1));
        let fresh = fresh.encode_to_vec();
        let decided = if rest {
            let plan = PlanOrderRequest {
                request_id: req.request_id,
                order: req.order,
            };
            self.peers
                .routing(tenant)
                .plan_order(plan)
                .await
                .map(|r| r.into_inner().decision)
        } else {
            self.peers
                .routing(tenant)
                .reroute_order(req)
                .await
                .map(|r| r.into_inner().decision)
        };
        let decision = match decided {
            Ok(d) => d.unwrap_or_default(),
            Err(st) => {
                self.retry_failed(tx, s, &st).await?;
                return Ok(());
            }
        };
        // A plan that will not be used gives its node capacity back.
        let (unplan, unplan_payload) = unplan_step(&decision.name, "planned again");
        let summary = decision
            .explanation
            .as_ref()
            .map(|e| e.summary.clone())
            .unwrap_or_default();
        if decision.hold || !decision.backorders.is_empty() || decision.assignments.is_empty() {
            let wait = Duration::from_secs(30 * (1 + s.attempts.min(9) as u64));
            let why = format!(
                "no other node can take the work yet ({}): {summary}",
                decision.name
            );
            tracing::info!(order = %o.name, %why, "rerouting again later");
            repo::saga::enqueue(tx, tenant, s.order_id, &unplan, &unplan_payload).await?;
            if !decision.backorders.is_empty() {
                // Short of stock (not of capacity): stock that comes
                // wakes it.
                let wanted: Vec<(String, i64)> =
                    lines.iter().map(|l| (l.sku.clone(), l.quantity)).collect();
                wait_for_stock(tx, tenant, s, &o, &wanted).await?;
            }
            repo::saga::retry_with(tx, s, &fresh, &why, Utc::now() + wait).await?;
            return Ok(());
        }
        // 3. Hold and allocate the units at the new nodes.
        let reservation = format!("{}-{}", reservation_id(s.order_id), decision.decision_id);
        let reserve = CreateReservationRequest {
            reservation_id: reservation.clone(),
            lines: decision
                .assignments
                .iter()
                .map(|a| ReservationLine {
                    sku: a.sku.clone(),
                    quantity: a.quantity,
                    node_id: a.node_id.clone(),
                    ..Default::default()
                })
                .collect(),
            ttl: prost_types::Duration::try_from(REROUTE_HOLD).ok(),
            reference: o.name.clone(),
            channel: o.channel.clone(),
            backorders_of: crate::workers::demand_publisher::SOURCE.to_owned(),
        };
        let confirm = ConfirmReservationRequest {
            request_id: format!("confirm-{}", decision.decision_id),
            name: format!("reservations/{reservation}"),
            allocations: decision
                .assignments
                .iter()
                .map(|a| Allocation {
                    sku: a.sku.clone(),
                    node_id: a.node_id.clone(),
                    quantity: a.quantity,
                    ..Default::default()
                })
                .collect(),
        };
        let mut inventory = self.peers.inventory(tenant);
        match inventory.create_reservation(reserve).await {
            Ok(_) => {}
            Err(st) if moved_since_the_plan(&st) => {
                // Stock moved since the plan, or the channel's pool changed
                // (nothing was held): plan again.
                repo::saga::enqueue(tx, tenant, s.order_id, &unplan, &unplan_payload).await?;
                let at = Utc::now() + backoff(s.attempts);
                repo::saga::retry_with(tx, s, &fresh, st.message(), at).await?;
                return Ok(());
            }
            Err(st) => {
                self.retry_failed(tx, s, &st).await?;
                return Ok(());
            }
        }
        let fresh = match inventory.confirm_reservation(confirm).await {
            Ok(r) => fresh_lots(r.into_inner().reservation.as_ref()),
            Err(st) => {
                self.retry_failed(tx, s, &st).await?;
                return Ok(());
            }
        };
        // 4. Work for the new nodes, and the order's record of it.
        let back: Vec<(String, i64)> = lines
            .iter()
            .map(|l| (l.line_id.clone(), l.quantity))
            .collect();
        let placed: Vec<(String, String, i64)> = decision
            .assignments
            .iter()
            .map(|a| (a.line_id.clone(), a.node_id.clone(), a.quantity))
            .collect();
        let mut moved = o.clone();
        for l in &mut moved.lines {
            l.sourcing.clear();
        }
        lifecycle::resourced(&mut moved, &failed, &[], &placed);
        let work = fulfillment_orders(&o, &moved.lines, &reservation, &fresh);
        let names = match self
            .release_work(tenant, s.order_id, &decision.decision_id, work)
            .await
        {
            Ok(n) => n,
            Err(e) => {
                self.retry_failed(tx, s, &e.status).await?;
                return Ok(());
            }
        };
        lifecycle::resourced(&mut o, &failed, &back, &placed);
        let reason = if rest {
            format!(
                "backordered units placed ({}): {summary}; released {}",
                decision.name,
                names.join(", ")
            )
        } else {
            format!(
                "rerouted from {failed} ({}): {summary}; released {}",
                decision.name,
                names.join(", ")
            )
        };
        let happened = Happened {
            kind: order_event::Kind::Updated(OrderUpdated {
                paths: vec!["lines.sourcing".into()],
                reason: reason.clone(),
            }),
            reason,
        };
        record(
            tx, tenant, s.order_id, &mut o, held_from, from, ACTOR, "", happened,
        )
        .await?;
        repo::saga::done(tx, s).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::given_back;
    use oms_proto::fulfillment::{FulfillmentLine, FulfillmentOrder, FulfillmentState};

    fn fo(state: FulfillmentState, lines: &[(&str, i64, i64)]) -> FulfillmentOrder {
        let mut f = FulfillmentOrder {
            lines: lines
                .iter()
                .map(|(id, q, shipped)| FulfillmentLine {
                    line_id: id.to_string(),
                    sku: format!("S{id}"),
                    quantity: *q,
                    quantity_shipped: *shipped,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        f.set_state(state);
        f
    }

    #[test]
    fn units_given_back_count_from_the_last_report_or_from_creation() {
        let released = fo(FulfillmentState::Released, &[("1", 3, 0), ("2", 2, 0)]);
        let rejected = fo(FulfillmentState::Rejected, &[("1", 3, 1), ("2", 2, 0)]);
        let back = |b: Option<&FulfillmentOrder>, f: &FulfillmentOrder| -> Vec<(String, i64)> {
            given_back(b, f)
                .into_iter()
                .map(|(l, _, q)| (l, q))
                .collect()
        };
        let all = [("1".to_string(), 2), ("2".to_string(), 2)];
        assert_eq!(back(Some(&released), &rejected), all);
        // First heard of when already rejected (a resync): the same.
        assert_eq!(back(None, &rejected), all);
        // Heard of again: nothing more.
        assert_eq!(back(Some(&rejected), &rejected), []);
        // New work gave nothing back.
        assert_eq!(back(None, &released), []);
    }
}
