//! Giving back what an order no longer needs: units released to
//! inventory (cancels, edits), units an edit added that were not recorded,
//! and plans' node capacity given back to routing.
use super::*;

impl Saga {
    pub(super) async fn release(
        &self,
        tx: &mut PgConnection,
        tenant: &Tenant,
        s: &Step,
    ) -> anyhow::Result<()> {
        let req = ReleaseReservationRequest::decode(s.payload.as_slice())?;
        let answer = self.peers.inventory(tenant).release_reservation(req).await;
        // Never reserved, or already released or expired: nothing to give back.
        self.settle(
            tx,
            s,
            answer.map(drop),
            &[Code::NotFound, Code::FailedPrecondition],
        )
        .await
    }

    /// Adds units to an order's reservation for the edit `key` (its
    /// request id), which `tx` records. They never outlive an edit that is
    /// not recorded (its commit fails, or this process stops first): an
    /// undo step, written and committed before inventory is asked, takes
    /// them back unless `tx` removes it. An edit whose earlier attempt was
    /// undone is refused (`EDIT_GIVEN_UP`): its extension would only
    /// replay now, holding nothing. A reservation that expired unconfirmed
    /// is not extended: the order is reserved again as a whole.
    /// `side` commits on its own; the caller took it before locking the
    /// order (see `tick`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn extend_for_edit(
        &self,
        tx: &mut PgConnection,
        side: &mut PgConnection,
        tenant: &Tenant,
        order_id: uuid::Uuid,
        key: &str,
        extend: ExtendReservationRequest,
    ) -> crate::error::Result<()> {
        use crate::error::Error;
        let undo = format!("{}{key}", repo::saga::UNDO_EXTEND);
        let at = Utc::now() + UNDO_EXTENSION_AFTER;
        repo::saga::schedule(
            &mut *side,
            tenant,
            order_id,
            &undo,
            &extend.encode_to_vec(),
            at,
        )
        .await?;
        if let Err(st) = self
            .peers
            .inventory(tenant)
            .extend_reservation(extend)
            .await
        {
            // Refused: nothing was added, nothing to take back. (After a
            // timeout it may have been: the step stays for that.)
            if reservation_expired(&st) {
                // The reservation expired unconfirmed (an order held past
                // its TTL): the route step reserves the order again, with
                // the edited lines, so the edit needs no extension.
                // Refusing it left the order uneditable until then.
                repo::saga::take(&mut *side, tenant, order_id, &undo).await?;
                return Ok(());
            }
            if matches!(
                st.code(),
                Code::FailedPrecondition | Code::InvalidArgument | Code::NotFound
            ) {
                repo::saga::take(&mut *side, tenant, order_id, &undo).await?;
            }
            return Err(Error::Inventory(st));
        }
        if !repo::saga::take(&mut *tx, tenant, order_id, &undo).await? {
            return Err(Error::Refused(lifecycle::Refused {
                reason: "EDIT_GIVEN_UP",
                message: format!(
                    "an earlier attempt of this edit was not recorded and its units went back \
                     to inventory; send the edit again with a new request_id ({key})"
                ),
            }));
        }
        Ok(())
    }

    /// Takes back the units an edit added to an order's reservation when
    /// the edit itself was not recorded (its commit failed, or the process
    /// stopped before it). Whether the extension happened is not known
    /// here, so it is asked again first: a replay if it happened, done now
    /// if not, so that the release then takes back exactly its units. An
    /// extension inventory refuses now (short, invalid for the
    /// reservation's state, reservation gone) never happened: nothing to
    /// take back.
    pub(super) async fn undo_extend(
        &self,
        tx: &mut PgConnection,
        tenant: &Tenant,
        s: &Step,
    ) -> anyhow::Result<()> {
        let extend = ExtendReservationRequest::decode(s.payload.as_slice())?;
        let name = extend.name.clone();
        let mut inventory = self.peers.inventory(tenant);
        let lines: Vec<(String, String, i64)> = extend
            .lines
            .iter()
            .map(|a| (a.sku.clone(), a.node_id.clone(), a.quantity))
            .collect();
        match inventory.extend_reservation(extend).await {
            Ok(_) => {}
            Err(st)
                if matches!(
                    st.code(),
                    Code::NotFound | Code::FailedPrecondition | Code::InvalidArgument
                ) =>
            {
                repo::saga::retire(tx, s).await?;
                return Ok(());
            }
            Err(st) => return self.retry_failed(tx, s, &st).await,
        }
        let release = release_request(&name, s.order_id, &s.step, &lines, "edit not recorded");
        match inventory.release_reservation(release).await {
            // The step is kept, retired: a late retry of the edit must not
            // count on units given back (see `grpc::edit_lines`).
            Err(st) if !matches!(st.code(), Code::NotFound | Code::FailedPrecondition) => {
                self.retry_failed(tx, s, &st).await
            }
            _ => Ok(repo::saga::retire(tx, s).await?),
        }
    }

    /// Gives a decision's node capacity back; retried until routing
    /// answers. An unknown decision has nothing to give back.
    pub(super) async fn unplan(
        &self,
        tx: &mut PgConnection,
        tenant: &Tenant,
        s: &Step,
    ) -> anyhow::Result<()> {
        let req = ReleaseDecisionRequest::decode(s.payload.as_slice())?;
        let answer = self.peers.routing(tenant).release_decision(req).await;
        self.settle(
            tx,
            s,
            answer.map(drop),
            &[Code::NotFound, Code::InvalidArgument],
        )
        .await
    }

    /// Gives back the node capacity of every plan routing still counts for
    /// an order: for a cancelled order, wholly (the plan it recorded, and
    /// any that an attempt made without recording it: orders stopped
    /// after the plan); else at the nodes whose work of the plan ended
    /// with nothing shipped. Retried until routing answers.
    pub(super) async fn unplan_all(
        &self,
        tx: &mut PgConnection,
        tenant: &Tenant,
        s: &Step,
        how: Unplan,
    ) -> anyhow::Result<()> {
        let work = match how {
            Unplan::Whole => vec![],
            Unplan::AtIdleNodes => repo::feeds::fulfillments(&mut *tx, tenant, s.order_id).await?,
        };
        let mut routing = self.peers.routing(tenant);
        let mut page_token = String::new();
        loop {
            let list = ListDecisionsRequest {
                page_size: 500,
                page_token,
                order: format!("orders/{}", s.order_id),
            };
            let page = match routing.list_decisions(list).await {
                Ok(r) => r.into_inner(),
                Err(st) => return self.retry_failed(tx, s, &st).await,
            };
            for d in page.decisions.iter().filter(|d| d.release_time.is_none()) {
                let release = match how {
                    Unplan::Whole => unplan_request(&d.name, "order cancelled"),
                    Unplan::AtIdleNodes => match idle_nodes(d, &work) {
                        idle if idle.is_empty() => continue,
                        idle => unplan_at_request(&d.name, idle),
                    },
                };
                // Refused: released already under that request id.
                match routing.release_decision(release).await {
                    Err(st) if !matches!(st.code(), Code::NotFound | Code::InvalidArgument) => {
                        return self.retry_failed(tx, s, &st).await;
                    }
                    _ => {}
                }
            }
            if page.next_page_token.is_empty() {
                return Ok(repo::saga::done(tx, s).await?);
            }
            page_token = page.next_page_token;
        }
    }
}

/// When the units of an edit that was not recorded go back to inventory:
/// well after the edit's own attempt has ended (its inventory call has a
/// deadline of seconds), and soon enough not to keep a placement that
/// meets the extra units waiting long. (Should it run while a retry of the
/// edit is under way, the step's row lock makes that retry see it and
/// refuse, so the two stay consistent either way.)
const UNDO_EXTENSION_AFTER: chrono::TimeDelta = chrono::TimeDelta::minutes(1);

/// The step that gives back every plan routing counts for a cancelled
/// order ([`repo::saga::UNPLAN_ALL`]).
pub fn unplan_all_step() -> (String, Vec<u8>) {
    (repo::saga::UNPLAN_ALL.to_owned(), vec![])
}

/// For an order cancelled through its nodes (after release) that shipped
/// nothing: the step that gives its plans' capacity back, as for a cancel
/// before release (no node shipped any of it). Once anything shipped, the
/// plan's shipments count, but for the nodes that gave their work up
/// ([`repo::saga::UNPLAN_IDLE`]).
pub fn unplanned_if_unshipped(o: &oms_proto::orders::Order) -> Option<(String, Vec<u8>)> {
    let unshipped = o.lines.iter().all(|l| l.quantity_shipped == 0);
    (lifecycle::state(o) == OrderState::Cancelled && unshipped).then(unplan_all_step)
}

/// The step that gives decision `name`'s node capacity back, because its
/// plan will not ship (`reason`).
pub fn unplan_step(name: &str, reason: &str) -> (String, Vec<u8>) {
    let id = name.trim_start_matches("decisions/");
    let req = unplan_request(name, reason);
    (format!("{}{id}", repo::saga::UNPLAN), req.encode_to_vec())
}

/// The release of decision `name`, keyed by the decision: however many
/// steps ask for it, it is given back once.
fn unplan_request(name: &str, reason: &str) -> ReleaseDecisionRequest {
    let id = name.trim_start_matches("decisions/");
    ReleaseDecisionRequest {
        request_id: format!("unplan-{id}"),
        name: name.to_owned(),
        reason: reason.to_owned(),
        node_ids: vec![],
    }
}

/// How much of an order's plans [`Saga::unplan_all`] gives back.
#[derive(Clone, Copy)]
pub(super) enum Unplan {
    /// All of them: the order is cancelled and shipped nothing.
    Whole,
    /// Their shipments at the nodes that gave their work up.
    AtIdleNodes,
}

/// The nodes of decision `d` whose work of it (of `work`, the order's)
/// all ended with nothing shipped, sorted; nodes with no work of it yet
/// are not among them.
fn idle_nodes(d: &Decision, work: &[FulfillmentOrder]) -> Vec<String> {
    let ended = |fo: &FulfillmentOrder| {
        matches!(
            fo.state(),
            FulfillmentState::Cancelled | FulfillmentState::Rejected
        ) && fo.lines.iter().all(|l| l.quantity_shipped == 0)
    };
    let mut idle: Vec<String> = d
        .assignments
        .iter()
        .map(|a| a.node_id.clone())
        .filter(|n| {
            let mut at = work
                .iter()
                .filter(|fo| fo.decision == d.name && fo.node_id == *n)
                .peekable();
            at.peek().is_some() && at.all(ended)
        })
        .collect();
    idle.sort();
    idle.dedup();
    idle
}

/// The release of decision `name` at `nodes` only (sorted), for an order
/// cancelled after they shipped none of it: keyed by the decision and the
/// nodes, so a repeat gives nothing back twice.
fn unplan_at_request(name: &str, nodes: Vec<String>) -> ReleaseDecisionRequest {
    let id = name.trim_start_matches("decisions/");
    ReleaseDecisionRequest {
        request_id: RequestId::derived("unplan", format!("unplan-{id}-at-{}", nodes.join(","))),
        name: name.to_owned(),
        reason: "order cancelled; these nodes shipped none of it".to_owned(),
        node_ids: nodes,
    }
}

/// The request that adds units (SKU, node, units) to an order's
/// reservation, keyed by the edit that needs them.
pub fn extend_request(
    o: &oms_proto::orders::Order,
    key: &str,
    lines: &[(String, String, i64)],
    reason: &str,
) -> ExtendReservationRequest {
    let order_id = &o.order_id;
    ExtendReservationRequest {
        request_id: RequestId::derived("extend", format!("extend-{order_id}-{key}")),
        name: reservation_name(o),
        lines: allocations(lines),
        reason: reason.to_owned(),
        // The reservation keeps its time.
        ttl: None,
    }
}

fn allocations(lines: &[(String, String, i64)]) -> Vec<Allocation> {
    lines
        .iter()
        .map(|(sku, node, q)| Allocation {
            sku: sku.clone(),
            node_id: node.clone(),
            quantity: *q,
            ..Default::default()
        })
        .collect()
}

/// The request that gives back (some of) reservation `name` of order
/// `order_id`: units per (SKU, node); none gives back everything.
pub fn release_request(
    name: &str,
    order_id: uuid::Uuid,
    key: &str,
    lines: &[(String, String, i64)],
    reason: &str,
) -> ReleaseReservationRequest {
    ReleaseReservationRequest {
        request_id: RequestId::derived("release", format!("release-{order_id}-{key}")),
        name: name.to_owned(),
        lines: allocations(lines),
        reason: reason.to_owned(),
    }
}
