//! The `route` step: asks routing for a plan of a reserved order and
//! confirms its reservation at the chosen nodes; a plan that cannot place
//! everything is asked for again later, or ships in parts.
use super::*;

impl Saga {
    /// Plans a reserved order and confirms its reservation at the chosen
    /// nodes. Both calls are idempotent: the plan's request id carries the
    /// step's plan key (see [`route_step`]) and the confirmation's is the
    /// decision's.
    pub(super) async fn route(
        &self,
        tx: &mut PgConnection,
        side: &mut PgConnection,
        tenant: &Tenant,
        s: &Step,
    ) -> anyhow::Result<()> {
        let Some((mut o, held_from)) = lock_in_state(tx, tenant, s, OrderState::Reserved).await?
        else {
            return Ok(());
        };
        let from = OrderState::Reserved;
        if repo::saga::give_backs_pending(tx, tenant, s.order_id).await? {
            // Units cancelled or edited away, or added by an edit that was
            // not recorded, are still held: allocations for what the order
            // keeps would not cover the reservation, and inventory would
            // refuse them. Their give-back runs first (it backs off on its
            // own while inventory is down).
            let soon = Utc::now() + chrono::Duration::milliseconds(500);
            repo::saga::wait(tx, s, "units still to give back", soon).await?;
            return Ok(());
        }
        let plan = PlanOrderRequest {
            request_id: plan_request_id(s, o.version),
            order: Some(routing_order(&o)),
        };
        // A plan counts against its nodes' capacity until it is confirmed
        // or given back. One this attempt leaves unrecorded holds the lines
        // as they are, so that the next attempt asks for the same plan and
        // gets it back (an edit would plan afresh and leave it counted).
        let first = doubt(side, tenant, s).await?;
        let decision = match self.peers.routing(tenant).plan_order(plan).await {
            Ok(r) => r.into_inner().decision.unwrap_or_default(),
            Err(st) => {
                // A refusal is for good (an earlier attempt's same request
                // was refused too): no plan of this step counts.
                let refused = st.code() == Code::InvalidArgument;
                settle_doubt(tx, tenant, s, changed_nothing(&st) && (first || refused)).await?;
                if refused {
                    let reason = format!("routing refused the order: {}", st.message());
                    hold_for_review(tx, tenant, s.order_id, (&mut o, held_from), from, reason)
                        .await?;
                    repo::saga::done(tx, s).await?;
                } else {
                    self.retry_failed(tx, s, &st).await?;
                }
                return Ok(());
            }
        };
        if decision.assignments.is_empty() {
            // No node was chosen, so none counts the plan: nothing to hold.
            settle_doubt(tx, tenant, s, true).await?;
        }
        let summary = decision
            .explanation
            .as_ref()
            .map(|e| e.summary.clone())
            .unwrap_or_default();
        if decision.hold {
            let reason = format!("routing held the order ({}): {summary}", decision.name);
            hold_for_review(tx, tenant, s.order_id, (&mut o, held_from), from, reason).await?;
            repo::saga::done(tx, s).await?;
            return Ok(());
        }
        if !decision.backorders.is_empty() && !decision.assignments.is_empty() {
            // The rule ships what it can now and backorders the rest: the
            // rest leaves this reservation and waits on a step of its own.
            if !self
                .backorder_rest(tx, tenant, s, (&mut o, held_from), &decision)
                .await?
            {
                return Ok(());
            }
        } else if !decision.backorders.is_empty() || decision.assignments.is_empty() {
            // Reserved in the network but not placeable now (split rules,
            // capacity, distance): ask again as stock and load change.
            let wait = Duration::from_secs(30 * (1 + s.attempts.min(9) as u64));
            let why = format!("not fully routable ({}): {summary}", decision.name);
            tracing::info!(order = %o.name, %why, "routing again later");
            let next = Utc::now() + wait;
            if tell_deferred(tx, tenant, s.order_id, &o, &decision.name, &summary, next).await? {
                self.metrics.deferred(tenant.as_str());
            }
            if !decision.backorders.is_empty() {
                // Short at the nodes it may use (its units are held in the
                // network already, so it asks no more of it): stock of
                // those SKUs arriving at a node plans it again.
                let wanted: Vec<(String, i64)> = decision
                    .backorders
                    .iter()
                    .filter_map(|b| o.lines.iter().find(|l| l.line_id == b.line_id))
                    .map(|l| (l.sku.clone(), 0))
                    .collect();
                wait_for_stock(tx, tenant, s, &o, &wanted).await?;
            }
            repo::saga::retry_with(tx, s, &new_plan_key(), &why, next).await?;
            return Ok(());
        }
        let mut allocations: Vec<Allocation> = Vec::new();
        for a in &decision.assignments {
            match allocations
                .iter_mut()
                .find(|x| x.sku == a.sku && x.node_id == a.node_id)
            {
                Some(x) => x.quantity += a.quantity,
                None => allocations.push(Allocation {
                    sku: a.sku.clone(),
                    node_id: a.node_id.clone(),
                    quantity: a.quantity,
                    ..Default::default()
                }),
            }
        }
        let confirm = ConfirmReservationRequest {
            request_id: format!("confirm-{}", decision.decision_id),
            name: reservation_name(&o),
            allocations,
        };
        // The mark (above) holds the lines while the confirmation too is in
        // doubt: it is taken once the plan is recorded or given back.
        let answer = self
            .peers
            .inventory(tenant)
            .confirm_reservation(confirm)
            .await;
        match answer {
            Ok(_) => {
                settle_doubt(tx, tenant, s, true).await?;
                lifecycle::routed(&mut o, &decision).map_err(|r| anyhow::anyhow!(r.message))?;
                let happened = Happened::state_changed(from, OrderState::Routed, summary);
                record(
                    tx, tenant, s.order_id, &mut o, held_from, from, ACTOR, "", happened,
                )
                .await?;
                repo::saga::done(tx, s).await?;
                repo::saga::enqueue(tx, tenant, s.order_id, repo::saga::FULFIL, &[]).await?;
            }
            // Stock moved between the plan and the confirmation, or the
            // channel's pool changed (routing reads it every few seconds);
            // or the confirmation failed and surely changed nothing. The
            // plan goes back and the next attempt plans again, for the order
            // as it is then (the lines may change meanwhile).
            Err(st)
                if moved_since_the_plan(&st)
                    || (first && changed_nothing(&st) && !refused_for_good(&st)) =>
            {
                settle_doubt(tx, tenant, s, first).await?;
                let (step, payload) = unplan_step(&decision.name, "planned again");
                repo::saga::enqueue(tx, tenant, s.order_id, &step, &payload).await?;
                self.retry_failed_with(tx, s, &st, Some(&new_plan_key()))
                    .await?;
            }
            // Held unconfirmed past its time (the order on hold, or waiting
            // for a plan, for RESERVATION_TTL): its units went back. The
            // plan goes back and the order is placed again under a new
            // reservation (before 2026-12-04 it went on hold for review,
            // and every release of that hold met the same refusal).
            Err(st) if reservation_expired(&st) => {
                settle_doubt(tx, tenant, s, first && changed_nothing(&st)).await?;
                let (step, payload) = unplan_step(&decision.name, "reservation expired");
                repo::saga::enqueue(tx, tenant, s.order_id, &step, &payload).await?;
                let (expired, next) = (reservation_name(&o), next_reservation(&o));
                lifecycle::reservation_expired(&mut o, next.clone())
                    .map_err(|r| anyhow::anyhow!(r.message))?;
                let why = format!("{expired} expired unconfirmed: reserving again as {next}");
                let happened = Happened::state_changed(from, OrderState::Created, why);
                record(
                    tx, tenant, s.order_id, &mut o, held_from, from, ACTOR, "", happened,
                )
                .await?;
                repo::saga::done(tx, s).await?;
                repo::saga::enqueue(tx, tenant, s.order_id, repo::saga::RESERVE, &[]).await?;
            }
            Err(st) if refused_for_good(&st) => {
                settle_doubt(tx, tenant, s, first && changed_nothing(&st)).await?;
                let reason = format!("allocation refused by inventory: {}", st.message());
                let (step, payload) = unplan_step(&decision.name, &reason);
                repo::saga::enqueue(tx, tenant, s.order_id, &step, &payload).await?;
                hold_for_review(tx, tenant, s.order_id, (&mut o, held_from), from, reason).await?;
                repo::saga::done(tx, s).await?;
            }
            Err(st) => {
                self.retry_failed(tx, s, &st).await?;
            }
        }
        Ok(())
    }

    /// A partial plan: gives the backordered units of `decision` back to
    /// inventory, marks them backordered on the order (so a retried plan
    /// covers only what is still held) and enqueues the step that places
    /// them once stock allows. Returns false when inventory could not take
    /// them back yet (the step is retried). A retry of the step gets the
    /// same decision back (see [`route_step`]): after a crash before commit
    /// the release is replayed, not repeated; after a committed attempt
    /// (its confirmation failed) the rest's step is there and nothing is
    /// set aside twice.
    async fn backorder_rest(
        &self,
        tx: &mut PgConnection,
        tenant: &Tenant,
        s: &Step,
        (o, held_from): (&mut oms_proto::orders::Order, Option<OrderState>),
        decision: &oms_proto::routing::Decision,
    ) -> anyhow::Result<bool> {
        if repo::saga::exists(
            tx,
            tenant,
            s.order_id,
            &crate::workers::reroute::rest_step_name(&decision.decision_id),
        )
        .await?
        {
            return Ok(true);
        }
        let rest: Vec<(String, String, i64)> = decision
            .backorders
            .iter()
            .filter_map(|b| {
                let l = o.lines.iter().find(|l| l.line_id == b.line_id)?;
                Some((l.line_id.clone(), l.sku.clone(), b.quantity))
            })
            .collect();
        let units: Vec<(String, String, i64)> = rest
            .iter()
            .map(|(_, sku, q)| (sku.clone(), String::new(), *q))
            .collect();
        let key = format!("backorder-{}", decision.decision_id);
        let reason = format!("backordered by {}", decision.name);
        let give_back = release_request(&reservation_name(o), s.order_id, &key, &units, &reason);
        if let Err(st) = self
            .peers
            .inventory(tenant)
            .release_reservation(give_back)
            .await
        {
            self.retry_failed(tx, s, &st).await?;
            return Ok(false);
        }
        for (line, _, q) in &rest {
            if let Some(l) = o.lines.iter_mut().find(|l| l.line_id == *line) {
                l.quantity_backordered += q;
            }
        }
        let (step, payload) = crate::workers::reroute::rest_step(o, &rest, &decision.decision_id);
        repo::orders::save(tx, tenant, s.order_id, o, held_from, Utc::now()).await?;
        repo::saga::enqueue(tx, tenant, s.order_id, &step, &payload).await?;
        Ok(true)
    }
}

/// A `route` step with a plan key of its own (its payload). Routing is
/// asked for plan `route-<order>-<key>-v<order version>` and the plan
/// confirmed with the decision's id, so a retry after a lost answer (a crash, a timeout, a
/// broken connection after the peer committed) gets the same plan back and
/// confirms it again, which inventory answers as the first time; a new key
/// (a new step, or a deliberate new plan) asks afresh. Counting attempts
/// instead asked for a new plan after a lost confirmation, which inventory
/// refused (the reservation was confirmed already): the order went on hold.
pub(crate) fn route_step() -> (String, Vec<u8>) {
    (repo::saga::ROUTE.to_owned(), new_plan_key())
}

fn new_plan_key() -> Vec<u8> {
    uuid::Uuid::now_v7().simple().to_string().into_bytes()
}

/// The plan's request id: the step's key and the order's version (an
/// order changed since, by an edit or a cancel, is planned afresh: the
/// same id with other lines is refused).
fn plan_request_id(s: &Step, version: i64) -> String {
    match std::str::from_utf8(&s.payload) {
        Ok(key) if !key.is_empty() => format!("route-{}-{key}-v{version}", s.order_id),
        // A step written before steps carried a key: as then.
        _ => format!("route-{}-{}", s.order_id, s.attempts),
    }
}

/// Tells the order's history and feed that routing could not place it in
/// full (`decision`, said by `summary`) and when it is planned next; only
/// when the reason is new, so that an order waiting days for a node that
/// ships gets one line per reason, not one per attempt. Whether it told.
async fn tell_deferred(
    tx: &mut PgConnection,
    tenant: &Tenant,
    order_id: uuid::Uuid,
    o: &oms_proto::orders::Order,
    decision: &str,
    summary: &str,
    next: chrono::DateTime<Utc>,
) -> anyhow::Result<bool> {
    let said = format!("): {summary}");
    let happened = Happened {
        kind: order_event::Kind::RoutingDeferred(OrderRoutingDeferred {
            decision: decision.to_owned(),
            reason: summary.to_owned(),
            next_plan_time: Some(to_timestamp(next)),
        }),
        reason: format!("not placed in full yet, planned again later ({decision}{said}"),
    };
    let latest = repo::history::latest(tx, tenant, order_id).await?;
    let kind = happened.event_type();
    if latest.is_some_and(|(k, reason)| k == kind && reason.ends_with(&said)) {
        return Ok(false);
    }
    let state = lifecycle::state(o);
    tell(tx, tenant, order_id, o, state, ACTOR, "", happened).await?;
    Ok(true)
}

pub(crate) fn routing_order(o: &oms_proto::orders::Order) -> RoutingOrder {
    RoutingOrder {
        order: o.name.clone(),
        lines: o
            .lines
            .iter()
            .filter(|l| l.quantity > l.quantity_cancelled + l.quantity_backordered)
            .map(|l| RoutingLine {
                line_id: l.line_id.clone(),
                sku: l.sku.clone(),
                // Backordered units are not held: a later step places them.
                quantity: l.quantity - l.quantity_cancelled - l.quantity_backordered,
                unit_price: l.unit_price.clone(),
            })
            .collect(),
        ship_to: o.ship_to.clone(),
        delivery_method: o.delivery_method,
        pickup_node_id: o.pickup_node_id.clone(),
        service_level: o.service_level,
        promise_time: o.promise_time,
        channel: o.channel.clone(),
        priority: o.priority,
    }
}
