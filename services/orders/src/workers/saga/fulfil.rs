//! The `fulfil` step and work at the nodes: one fulfillment order per
//! node of a routed order, released to its warehouse, and the requests to
//! cancel work a node has.
use super::*;

impl Saga {
    /// Hands a routed order to fulfillment: one fulfillment order per node
    /// of its sourcing, created and released. Request ids are derived from
    /// the order, the decision and the node, so a retry creates nothing
    /// twice; the order is RELEASED once every node has its work.
    pub(super) async fn fulfil(
        &self,
        tx: &mut PgConnection,
        side: &mut PgConnection,
        tenant: &Tenant,
        s: &Step,
    ) -> anyhow::Result<()> {
        let Some((mut o, held_from)) = lock_in_state(tx, tenant, s, OrderState::Routed).await?
        else {
            return Ok(());
        };
        let from = OrderState::Routed;
        let decision = o
            .routing_decision
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let reservation = reservation_id_of(&o);
        let held = GetReservationRequest {
            name: format!("reservations/{reservation}"),
        };
        let fresh = match self.peers.inventory(tenant).get_reservation(held).await {
            Ok(r) => fresh_lots(r.into_inner().reservation.as_ref()),
            Err(st) => {
                self.retry_failed(tx, s, &st).await?;
                return Ok(());
            }
        };
        let work = fulfillment_orders(&o, &o.lines, &reservation, &fresh);
        // Committed before the call: should this attempt not be recorded
        // (orders stops, the answer is lost), its work may be at the node
        // all the same, and an edit of the order's lines meanwhile would
        // make the next attempt's request differ from it (refused).
        let first = doubt(side, tenant, s).await?;
        // Its progress comes back on the tenant's fulfillment feed, also
        // that of work this attempt leaves unrecorded.
        repo::feeds::follow(&mut *side, repo::feeds::FULFILLMENT, tenant).await?;
        let names = match self.release_work(tenant, s.order_id, &decision, work).await {
            Ok(names) => names,
            Err(e) => {
                let settled = first && !e.reached && changed_nothing(&e.status);
                settle_doubt(tx, tenant, s, settled).await?;
                if e.status.code() == Code::InvalidArgument {
                    let reason = format!("fulfillment refused the work: {}", e.status.message());
                    hold_for_review(tx, tenant, s.order_id, (&mut o, held_from), from, reason)
                        .await?;
                    repo::saga::done(tx, s).await?;
                } else {
                    self.retry_failed(tx, s, &e.status).await?;
                }
                return Ok(());
            }
        };
        settle_doubt(tx, tenant, s, true).await?;
        lifecycle::released(&mut o).map_err(|r| anyhow::anyhow!(r.message))?;
        let why = format!("released to fulfillment: {}", names.join(", "));
        let happened = Happened::state_changed(from, OrderState::Released, why);
        record(
            tx, tenant, s.order_id, &mut o, held_from, from, ACTOR, "", happened,
        )
        .await?;
        // What came on the feed already (the release's first attempt was
        // not recorded, and the WMS went on) is followed now: it will not
        // come again.
        let lines = o.lines.clone();
        let why = format!(
            "{} reported before the release was recorded",
            names.join(", ")
        );
        crate::workers::fulfillment_feed::follow_work(
            tx,
            tenant,
            s.order_id,
            (&mut o, held_from),
            &lines,
            why,
        )
        .await?;
        repo::saga::done(tx, s).await?;
        Ok(())
    }

    /// Creates and releases the fulfillment orders `work` (per node) of
    /// `decision`; returns their names. Request ids come from the order,
    /// the decision and the node, so a retry creates nothing twice.
    pub(crate) async fn release_work(
        &self,
        tenant: &Tenant,
        order_id: uuid::Uuid,
        decision: &str,
        work: Vec<(String, FulfillmentOrder)>,
    ) -> Result<Vec<String>, NotReleased> {
        let mut names = Vec::new();
        let mut client = self.peers.fulfillment(tenant);
        let failed = |reached: bool| move |status| NotReleased { status, reached };
        for (node, fo) in work {
            let created = client
                .create_fulfillment_order(CreateFulfillmentOrderRequest {
                    request_id: RequestId::derived(
                        "fo",
                        format!("fo-{order_id}-{decision}-{node}"),
                    ),
                    fulfillment_order: Some(fo),
                })
                .await
                .map_err(failed(!names.is_empty()))?;
            let name = created
                .into_inner()
                .fulfillment_order
                .unwrap_or_default()
                .name;
            client
                .release_fulfillment_order(ReleaseFulfillmentOrderRequest {
                    request_id: format!("release-{name}"),
                    name: name.clone(),
                })
                .await
                .map_err(failed(true))?;
            names.push(name);
        }
        Ok(names)
    }

    /// Asks a node to cancel a fulfillment order; retried until
    /// fulfillment answers. Work already shipped or finished stays as it
    /// is; the node's answer comes back on the fulfillment feed.
    pub(super) async fn cancel_work(
        &self,
        tx: &mut PgConnection,
        tenant: &Tenant,
        s: &Step,
    ) -> anyhow::Result<()> {
        let req = CancelFulfillmentOrderRequest::decode(s.payload.as_slice())?;
        let answer = self
            .peers
            .fulfillment(tenant)
            .cancel_fulfillment_order(req)
            .await;
        self.settle(
            tx,
            s,
            answer.map(drop),
            &[Code::NotFound, Code::FailedPrecondition],
        )
        .await
    }
}

/// The carrier service a node is asked for: the order's service level
/// ("next_day"), or none (the node's default) when the order named none.
/// Before 2026-12-03 it was the enum's name ("service_level_unspecified").
fn carrier_service(level: i32) -> String {
    use oms_proto::common::ServiceLevel;
    match ServiceLevel::try_from(level) {
        Ok(ServiceLevel::Unspecified) | Err(_) => String::new(),
        Ok(l) => l
            .as_str_name()
            .trim_start_matches("SERVICE_LEVEL_")
            .to_lowercase(),
    }
}

/// Whether `fo` is still work a node could give up (not shipped, nor
/// already ended).
pub fn open_work(fo: &FulfillmentOrder) -> bool {
    !matches!(
        fo.state(),
        FulfillmentState::Shipped
            | FulfillmentState::Delivered
            | FulfillmentState::Rejected
            | FulfillmentState::Cancelled
    )
}

/// The step that asks `fo`'s node to cancel it, for the order's cancel
/// request `key`.
pub fn cancel_work_step(fo: &FulfillmentOrder, key: &str, reason: &str) -> (String, Vec<u8>) {
    let req = CancelFulfillmentOrderRequest {
        request_id: RequestId::derived(
            "cancel",
            format!("cancel-{}-{key}", fo.fulfillment_order_id),
        ),
        name: fo.name.clone(),
        reason: if reason.is_empty() {
            "order cancelled".into()
        } else {
            format!("order cancelled: {reason}")
        },
    };
    (
        format!("{}{}", repo::saga::CANCEL_WORK, fo.fulfillment_order_id),
        req.encode_to_vec(),
    )
}

/// The earliest expiry date of a lot each allocation (SKU, node) may ship
/// from, as inventory set it at confirmation (items that track expiry).
pub(crate) type FreshLots = std::collections::HashMap<(String, String), String>;

/// The [`FreshLots`] of a confirmed reservation (none without one).
pub(crate) fn fresh_lots(r: Option<&Reservation>) -> FreshLots {
    r.into_iter()
        .flat_map(|r| &r.lines)
        .flat_map(|l| &l.allocations)
        .filter(|a| !a.min_expiry_date.is_empty())
        .map(|a| {
            (
                (a.sku.clone(), a.node_id.clone()),
                a.min_expiry_date.clone(),
            )
        })
        .collect()
}

/// The work per node of `lines` (by their sourcing), shipping the
/// allocations of reservation `reservation` (an id), each line from lots
/// `fresh` allows.
pub(crate) fn fulfillment_orders(
    o: &oms_proto::orders::Order,
    lines: &[oms_proto::orders::OrderLine],
    reservation: &str,
    fresh: &FreshLots,
) -> Vec<(String, FulfillmentOrder)> {
    let mut per_node: Vec<(String, FulfillmentOrder)> = Vec::new();
    for l in lines {
        for src in &l.sourcing {
            if src.quantity <= 0 {
                continue;
            }
            let i = match per_node.iter().position(|(n, _)| *n == src.node_id) {
                Some(i) => i,
                None => {
                    per_node.push((
                        src.node_id.clone(),
                        FulfillmentOrder {
                            order: o.name.clone(),
                            node_id: src.node_id.clone(),
                            ship_to: o.ship_to.clone(),
                            carrier_service: carrier_service(o.service_level),
                            ship_by_time: o.promise_time,
                            decision: o.routing_decision.clone(),
                            reservation: format!("reservations/{reservation}"),
                            ..Default::default()
                        },
                    ));
                    per_node.len() - 1
                }
            };
            let key = (l.sku.clone(), src.node_id.clone());
            per_node[i].1.lines.push(FulfillmentLine {
                line_id: l.line_id.clone(),
                sku: l.sku.clone(),
                quantity: src.quantity,
                min_expiry_date: fresh.get(&key).cloned().unwrap_or_default(),
                ..Default::default()
            });
        }
    }
    per_node
}

#[cfg(test)]
mod tests {
    use super::*;
    use oms_proto::common::ServiceLevel;
    use oms_proto::orders::{LineSourcing, Order, OrderLine};

    #[test]
    fn a_node_is_asked_for_the_service_level_or_none() {
        assert_eq!(carrier_service(ServiceLevel::NextDay as i32), "next_day");
        assert_eq!(carrier_service(ServiceLevel::Standard as i32), "standard");
        assert_eq!(carrier_service(ServiceLevel::Unspecified as i32), "");
        assert_eq!(carrier_service(99), "");
    }

    #[test]
    fn each_fulfillment_line_ships_from_lots_its_allocation_allows() {
        let line = |id: &str, sku: &str, at: &[(&str, i64)]| OrderLine {
            line_id: id.into(),
            sku: sku.into(),
            sourcing: at
                .iter()
                .map(|(n, q)| LineSourcing {
                    node_id: (*n).into(),
                    quantity: *q,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let o = Order {
            name: "orders/1".into(),
            lines: vec![
                line("1", "MILK", &[("DC1", 2), ("DC2", 1)]),
                line("2", "S", &[("DC1", 1)]),
            ],
            ..Default::default()
        };
        let reserved = Reservation {
            lines: vec![ReservationLine {
                sku: "MILK".into(),
                allocations: vec![
                    Allocation {
                        sku: "MILK".into(),
                        node_id: "DC1".into(),
                        min_expiry_date: "2027-01-03".into(),
                        ..Default::default()
                    },
                    Allocation {
                        sku: "MILK".into(),
                        node_id: "DC2".into(),
                        min_expiry_date: "2027-01-04".into(),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        };
        let work = fulfillment_orders(&o, &o.lines, "r1", &fresh_lots(Some(&reserved)));
        let dates: Vec<(&str, &str, &str)> = work
            .iter()
            .flat_map(|(node, fo)| {
                fo.lines
                    .iter()
                    .map(move |l| (node.as_str(), l.sku.as_str(), l.min_expiry_date.as_str()))
            })
            .collect();
        assert_eq!(
            dates,
            [
                ("DC1", "MILK", "2027-01-03"),
                ("DC1", "S", ""),
                ("DC2", "MILK", "2027-01-04")
            ]
        );
    }
}
