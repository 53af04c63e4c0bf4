//! The order's own rules for holds, cancellation and placement outcomes:
//! each function checks the move against the state machine and changes the
//! order, or refuses and leaves it as it was.
use super::OrderState;
use oms_proto::orders::{Hold, HoldType, LineQuantity, LineSourcing, Order, OrderLine};

/// A refused change: FAILED_PRECONDITION with this reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub reason: &'static str,
    pub message: String,
}

fn refuse(reason: &'static str, message: impl Into<String>) -> Refused {
    Refused {
        reason,
        message: message.into(),
    }
}

pub fn state(o: &Order) -> OrderState {
    oms_proto::orders::OrderState::try_from(o.state)
        .ok()
        .and_then(OrderState::from_proto)
        .unwrap_or(OrderState::Created)
}

fn set(o: &mut Order, to: OrderState) -> Result<(), Refused> {
    let from = state(o);
    if !from.can_move_to(to) {
        return Err(refuse(
            "ILLEGAL_STATE_CHANGE",
            format!(
                "{} cannot go from {} to {}",
                o.name,
                from.as_db(),
                to.as_db()
            ),
        ));
    }
    o.state = to.to_proto() as i32;
    Ok(())
}

/// Longest reason a change takes (holds, cancels, edits, updates): what
/// inventory and routing keep of one (an edit's reason goes on to
/// inventory with the units it adds).
pub const MAX_REASON: usize = 500;

/// The kind of a hold to place or release: a known one.
pub fn hold_type(t: i32) -> Result<HoldType, &'static str> {
    match HoldType::try_from(t) {
        Ok(HoldType::Unspecified) | Err(_) => Err("choose a hold type"),
        Ok(k) => Ok(k),
    }
}

/// Places a hold. The first hold moves the order to ON_HOLD and returns the
/// state it was held in; a second hold of another type only adds itself.
pub fn place_hold(o: &mut Order, hold: Hold) -> Result<Option<OrderState>, Refused> {
    if o.holds.iter().any(|h| h.r#type == hold.r#type) {
        return Err(refuse(
            "HOLD_EXISTS",
            format!("{} already has a hold of that type", o.name),
        ));
    }
    let from = state(o);
    let held_from = if from == OrderState::OnHold {
        None
    } else {
        set(o, OrderState::OnHold)?;
        Some(from)
    };
    o.holds.push(hold);
    Ok(held_from)
}

/// Releases a hold; when none is left the order returns to `held_from`.
pub fn release_hold(o: &mut Order, kind: HoldType, held_from: OrderState) -> Result<bool, Refused> {
    let before = o.holds.len();
    o.holds.retain(|h| h.r#type != kind as i32);
    if o.holds.len() == before {
        return Err(refuse(
            "NO_SUCH_HOLD",
            format!("{} has no hold of that type", o.name),
        ));
    }
    if o.holds.is_empty() {
        set(o, held_from)?;
        return Ok(true);
    }
    Ok(false)
}

/// Units of each line still wanted (ordered minus cancelled).
pub fn open_quantity(o: &Order) -> Vec<(String, String, i64)> {
    o.lines
        .iter()
        .map(|l| {
            (
                l.line_id.clone(),
                l.sku.clone(),
                l.quantity - l.quantity_cancelled,
            )
        })
        .filter(|(_, _, q)| *q > 0)
        .collect()
}

/// Cancels the whole order.
pub fn cancel(o: &mut Order) -> Result<(), Refused> {
    let st = state(o);
    if !st.before_release() {
        return Err(refuse(
            "ILLEGAL_STATE_CHANGE",
            format!("{} cannot go from {} to cancelled", o.name, st.as_db()),
        ));
    }
    set(o, OrderState::Cancelled)?;
    for l in &mut o.lines {
        l.quantity_cancelled = l.quantity;
        l.quantity_backordered = 0;
    }
    o.holds.clear();
    Ok(())
}

/// A cancel asked after release: the order's nodes are asked to give up
/// their work (the caller asks them), backordered units are cancelled now.
/// Returns the lines and units cancelled now.
pub fn request_cancel(o: &mut Order) -> Result<Vec<(String, i64)>, Refused> {
    let st = state(o);
    if !matches!(st, OrderState::Released | OrderState::PartiallyShipped) {
        return Err(refuse(
            "ILLEGAL_STATE_CHANGE",
            format!("{} is {}; it cannot be cancelled", o.name, st.as_db()),
        ));
    }
    // The nodes were asked once and their answers decide; asking again
    // would only send them the same cancel commands twice.
    if o.cancel_requested {
        return Err(refuse(
            "CANCEL_ALREADY_REQUESTED",
            format!(
                "{}: its nodes were already asked to cancel; their answers decide",
                o.name
            ),
        ));
    }
    o.cancel_requested = true;
    let mut now = vec![];
    for l in &mut o.lines {
        if l.quantity_backordered > 0 {
            l.quantity_cancelled += l.quantity_backordered;
            now.push((l.line_id.clone(), l.quantity_backordered));
            l.quantity_backordered = 0;
        }
    }
    Ok(now)
}

/// Units a node gave up (line id, units) on an order whose cancel was
/// asked: cancelled, and off that node's sourcing.
pub fn cancelled_at(o: &mut Order, node: &str, given_up: &[(String, i64)]) {
    resourced(o, node, given_up, &[]);
    for l in &mut o.lines {
        let q: i64 = given_up
            .iter()
            .filter(|(id, _)| *id == l.line_id)
            .map(|(_, q)| q)
            .sum();
        l.quantity_cancelled = (l.quantity_cancelled + q).min(l.quantity);
    }
}

/// Units given back to inventory: (sku, node, units); the node is empty
/// before routing placed the line.
pub type Freed = Vec<(String, String, i64)>;

/// Takes `units` off a routed line's sourcing, last node first, and says
/// where they were; an unrouted line frees them from the network.
fn unsource(l: &mut OrderLine, mut units: i64) -> Freed {
    let mut out = Vec::new();
    while units > 0 {
        let Some(last) = l.sourcing.last_mut() else {
            out.push((l.sku.clone(), String::new(), units));
            break;
        };
        let q = last.quantity.min(units);
        last.quantity -= q;
        units -= q;
        out.push((l.sku.clone(), last.node_id.clone(), q));
        if last.quantity == 0 {
            l.sourcing.pop();
        }
    }
    out
}

/// Cancels quantities of lines; cancelling everything cancels the order.
/// Returns what the cancelled units free.
pub fn cancel_lines(o: &mut Order, lines: &[LineQuantity]) -> Result<Freed, Refused> {
    let st = state(o);
    if !st.before_release() {
        return Err(refuse(
            "ILLEGAL_STATE_CHANGE",
            format!(
                "{} is {}; its lines can no longer be cancelled here",
                o.name,
                st.as_db()
            ),
        ));
    }
    let mut out = Vec::new();
    for lq in lines {
        let Some(l) = o.lines.iter().find(|l| l.line_id == lq.line_id) else {
            return Err(refuse(
                "NO_SUCH_LINE",
                format!("{} has no line {:?}", o.name, lq.line_id),
            ));
        };
        let open = l.quantity - l.quantity_cancelled;
        if lq.quantity > open {
            return Err(refuse(
                "CANCEL_EXCEEDS_OPEN",
                format!(
                    "line {} has {} open units; {} asked",
                    l.line_id, open, lq.quantity
                ),
            ));
        }
    }
    for lq in lines {
        if let Some(l) = o.lines.iter_mut().find(|l| l.line_id == lq.line_id) {
            out.extend(unsource(l, lq.quantity));
            l.quantity_cancelled += lq.quantity;
            l.quantity_backordered = l
                .quantity_backordered
                .min(l.quantity - l.quantity_cancelled);
        }
    }
    if o.lines.iter().all(|l| l.quantity_cancelled == l.quantity) {
        cancel(o)?;
    }
    Ok(out)
}

/// The reservation of the open lines succeeded.
pub fn reserved(o: &mut Order) -> Result<(), Refused> {
    set(o, OrderState::Reserved)?;
    reserved_on_hold(o);
    Ok(())
}

/// Its reservation expired before it was confirmed (its units went
/// back): the order is placed again, under `reservation`.
pub fn reservation_expired(o: &mut Order, reservation: String) -> Result<(), Refused> {
    set(o, OrderState::Created)?;
    o.reservation = reservation;
    Ok(())
}

/// Every open unit reserved while the order stays on hold.
pub fn reserved_on_hold(o: &mut Order) {
    for l in &mut o.lines {
        l.quantity_backordered = 0;
    }
}

/// Whether every hold in force on the order is a payment hold: it keeps
/// the order from routing and release, not from reserving its stock.
pub fn awaits_payment_only(o: &Order) -> bool {
    !o.holds.is_empty() && o.holds.iter().all(|h| h.r#type == HoldType::Payment as i32)
}

/// Whether the order takes no stock as it stands: cancelled, or on hold
/// for anything but its payment (until the hold is released).
pub fn takes_no_stock(o: &Order) -> bool {
    match state(o) {
        OrderState::Cancelled => true,
        OrderState::OnHold => !awaits_payment_only(o),
        _ => false,
    }
}

/// Routing placed every open unit: the lines record where from.
pub fn routed(o: &mut Order, d: &oms_proto::routing::Decision) -> Result<(), Refused> {
    set(o, OrderState::Routed)?;
    o.routing_decision = d.name.clone();
    for l in &mut o.lines {
        l.sourcing = d
            .assignments
            .iter()
            .filter(|a| a.line_id == l.line_id)
            .map(|a| LineSourcing {
                node_id: a.node_id.clone(),
                quantity: a.quantity,
                transfer_to_node_id: a.transfer_to_node_id.clone(),
            })
            .collect();
    }
    Ok(())
}

/// The work went to the nodes (one fulfillment order per node).
pub fn released(o: &mut Order) -> Result<(), Refused> {
    set(o, OrderState::Released)
}

/// Units of a line that one fulfillment order shipped and delivered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LineProgress {
    pub shipped: i64,
    pub delivered: i64,
}

/// Takes the shipped and delivered units per line (summed over the
/// order's fulfillment orders, by line id) and moves a released order to
/// PARTIALLY_SHIPPED, SHIPPED or DELIVERED accordingly (CANCELLED when a
/// cancel after release left nothing to ship). Returns the new state when
/// it changed.
pub fn progressed(
    o: &mut Order,
    per_line: &[(String, LineProgress)],
) -> Result<Option<OrderState>, Refused> {
    let from = state(o);
    if !matches!(
        from,
        OrderState::Released | OrderState::PartiallyShipped | OrderState::Shipped
    ) {
        return Ok(None);
    }
    for l in &mut o.lines {
        let p = per_line.iter().filter(|(id, _)| *id == l.line_id).fold(
            LineProgress::default(),
            |a, (_, p)| LineProgress {
                shipped: a.shipped + p.shipped,
                delivered: a.delivered + p.delivered,
            },
        );
        l.quantity_shipped = p.shipped;
        l.quantity_delivered = p.delivered;
    }
    let open = |l: &OrderLine| l.quantity - l.quantity_cancelled;
    if o.lines.iter().all(|l| open(l) == 0) {
        // A cancel after release, and the nodes gave everything up.
        set(o, OrderState::Cancelled)?;
        return Ok(Some(OrderState::Cancelled));
    }
    let all_shipped = o.lines.iter().all(|l| l.quantity_shipped >= open(l));
    let all_delivered = o.lines.iter().all(|l| l.quantity_delivered >= open(l));
    let any_shipped = o.lines.iter().any(|l| l.quantity_shipped > 0);
    let to = if all_shipped && all_delivered {
        OrderState::Delivered
    } else if all_shipped {
        OrderState::Shipped
    } else if any_shipped {
        OrderState::PartiallyShipped
    } else {
        from
    };
    // Shipped and delivered in one report: pass through SHIPPED.
    if to == OrderState::Delivered && from != OrderState::Shipped {
        set(o, OrderState::Shipped)?;
    }
    if to == state(o) {
        return Ok((to != from).then_some(to));
    }
    set(o, to)?;
    Ok(Some(to))
}

/// For an order `progressed` moved from `from` to DELIVERED in one
/// report, past SHIPPED (a report of both at once, or a resync after the
/// feed's steps were deleted): the order as it stood at SHIPPED, every
/// unit shipped and none delivered, so its history and feed can tell the
/// SHIPPED step too. None for any other move.
pub fn passed_through_shipped(from: OrderState, o: &Order) -> Option<Order> {
    if state(o) != OrderState::Delivered || from == OrderState::Shipped {
        return None;
    }
    let mut at = o.clone();
    at.state = OrderState::Shipped.to_proto() as i32;
    for l in &mut at.lines {
        l.quantity_delivered = 0;
    }
    Some(at)
}

/// A node gave units back (`given_back`: line id, units) and routing
/// placed them elsewhere (`placed`: line id, node, units): the lines'
/// sourcing follows.
pub fn resourced(
    o: &mut Order,
    failed_node: &str,
    given_back: &[(String, i64)],
    placed: &[(String, String, i64)],
) {
    for l in &mut o.lines {
        let mut back: i64 = given_back
            .iter()
            .filter(|(id, _)| *id == l.line_id)
            .map(|(_, q)| q)
            .sum();
        for src in l.sourcing.iter_mut().filter(|s| s.node_id == failed_node) {
            let q = back.min(src.quantity);
            src.quantity -= q;
            back -= q;
        }
        l.sourcing.retain(|s| s.quantity > 0);
        for (_, node, q) in placed.iter().filter(|(id, _, _)| *id == l.line_id) {
            // Backordered units (the rest of a partial plan) are placed now.
            l.quantity_backordered = (l.quantity_backordered - q).max(0);
            match l.sourcing.iter_mut().find(|s| s.node_id == *node) {
                Some(s) => s.quantity += q,
                None => l.sourcing.push(LineSourcing {
                    node_id: node.clone(),
                    quantity: *q,
                    transfer_to_node_id: String::new(),
                }),
            }
        }
    }
}

/// Stock was short: lines of the short SKUs wait for `missing` units each.
pub fn backordered(o: &mut Order, missing: &[(String, i64)]) -> Result<(), Refused> {
    if state(o) != OrderState::Backordered {
        set(o, OrderState::Backordered)?;
    }
    short_on_hold(o, missing);
    Ok(())
}

/// The lines' units `missing` (SKU, units) wait for stock, while the order
/// stays on hold. A SKU on several lines is missing from the last lines
/// first, so the earlier ones are served first; before, each of its lines
/// waited for the whole figure, and an order with two lines of a SKU one
/// unit short showed two units backordered.
pub fn short_on_hold(o: &mut Order, missing: &[(String, i64)]) {
    let mut left: Vec<(String, i64)> = missing.to_vec();
    for l in o.lines.iter_mut().rev() {
        let open = l.quantity - l.quantity_cancelled;
        l.quantity_backordered = match left.iter_mut().find(|(sku, _)| *sku == l.sku) {
            Some((_, m)) => {
                let here = (*m).min(open);
                *m -= here;
                here
            }
            None => 0,
        };
    }
}

/// How an order's units are held in inventory, which decides where the
/// units an edit adds are reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// Not yet reserved: placement reserves whatever the lines say.
    Nothing,
    /// Reserved in the network, not yet at nodes.
    Network,
    /// Allocated at the nodes of the lines' sourcing.
    AtNodes,
}

/// What an edit of line quantities changes in inventory.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Edit {
    /// Units given back: (SKU, node, units).
    pub freed: Freed,
    /// Units to add to the reservation: (SKU, node, units).
    pub added: Freed,
}

/// Sets new total quantities of lines before release. Removed units are
/// freed where they were held; added units are reserved the way the order
/// already is: in the network, or (once routed) at the node that ships
/// most of the line, so the plan stays as decided.
pub fn edit_lines(o: &mut Order, lines: &[LineQuantity], held: Held) -> Result<Edit, Refused> {
    let st = state(o);
    if !matches!(
        st,
        OrderState::Created
            | OrderState::OnHold
            | OrderState::Backordered
            | OrderState::Reserved
            | OrderState::Routed
    ) {
        return Err(refuse(
            "ORDER_RELEASED",
            format!(
                "{} is {}; its lines can no longer be edited",
                o.name,
                st.as_db()
            ),
        ));
    }
    for lq in lines {
        let Some(l) = o.lines.iter().find(|l| l.line_id == lq.line_id) else {
            return Err(refuse(
                "NO_SUCH_LINE",
                format!("{} has no line {:?}", o.name, lq.line_id),
            ));
        };
        if lq.quantity <= l.quantity_cancelled {
            return Err(refuse(
                "EDIT_BELOW_CANCELLED",
                format!(
                    "line {} has {} cancelled units; cancel lines to remove them all",
                    l.line_id, l.quantity_cancelled
                ),
            ));
        }
        if held == Held::AtNodes && lq.quantity > l.quantity && l.sourcing.is_empty() {
            return Err(refuse(
                "LINE_NOT_PLACED",
                format!(
                    "line {} waits for stock (backordered); add units once it is placed",
                    l.line_id
                ),
            ));
        }
    }
    let mut edit = Edit::default();
    for lq in lines {
        if let Some(l) = o.lines.iter_mut().find(|l| l.line_id == lq.line_id) {
            if lq.quantity < l.quantity {
                edit.freed.extend(unsource(l, l.quantity - lq.quantity));
            }
            let more = lq.quantity - l.quantity;
            if more > 0 {
                match held {
                    Held::Nothing => {}
                    Held::Network => edit.added.push((l.sku.clone(), String::new(), more)),
                    Held::AtNodes => {
                        if let Some(src) = l.sourcing.iter_mut().max_by_key(|s| s.quantity) {
                            src.quantity += more;
                            edit.added.push((l.sku.clone(), src.node_id.clone(), more));
                        }
                    }
                }
            }
            l.quantity = lq.quantity;
            l.quantity_backordered = l
                .quantity_backordered
                .min(l.quantity - l.quantity_cancelled);
        }
    }
    Ok(edit)
}

pub enum UpdateError {
    Invalid(oms_kernel::Violations),
    Refused(Refused),
}

/// Fields an update may change, before the order is released.
pub const UPDATABLE: &[&str] = &[
    "customer",
    "ship_to",
    "promise_time",
    "priority",
    "service_level",
    "attributes",
];

/// Applies the `paths` of `patch` to the order; the address is checked as
/// at creation. Released orders belong to the warehouse: refused.
pub fn update(o: &mut Order, patch: &Order, paths: &[String]) -> Result<(), UpdateError> {
    let st = state(o);
    if !matches!(
        st,
        OrderState::Created
            | OrderState::OnHold
            | OrderState::Backordered
            | OrderState::Reserved
            | OrderState::Routed
    ) {
        return Err(UpdateError::Refused(refuse(
            "ORDER_RELEASED",
            format!("{} is {}; it can no longer be changed", o.name, st.as_db()),
        )));
    }
    let mut v = oms_kernel::Violations::new();
    if paths.is_empty() {
        v.add(
            "update_mask",
            format!("name the fields to change: {}", UPDATABLE.join(", ")),
        );
    }
    let mut next = o.clone();
    for p in paths {
        match p.as_str() {
            "customer" => next.customer = patch.customer.clone(),
            "ship_to" => next.ship_to = patch.ship_to.clone(),
            "promise_time" => next.promise_time = patch.promise_time,
            "priority" => next.priority = patch.priority,
            "service_level" => next.service_level = patch.service_level,
            "attributes" => next.attributes = patch.attributes.clone(),
            other => v.add(
                "update_mask",
                format!(
                    "{other:?} cannot be updated; updatable: {}",
                    UPDATABLE.join(", ")
                ),
            ),
        }
    }
    // The same checks as at creation, on the whole result.
    if let Err(e) = super::NewOrder::parse(Some(next.clone())) {
        v.0.extend(
            e.0.into_iter()
                .filter(|x| !x.field.starts_with("order.lines")),
        );
    }
    if !v.is_empty() {
        return Err(UpdateError::Invalid(v));
    }
    *o = next;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oms_proto::orders::{OrderLine, OrderState as P};

    fn order() -> Order {
        Order {
            name: "orders/1".into(),
            state: P::Created as i32,
            lines: vec![
                OrderLine {
                    line_id: "1".into(),
                    sku: "A".into(),
                    quantity: 2,
                    ..Default::default()
                },
                OrderLine {
                    line_id: "2".into(),
                    sku: "B".into(),
                    quantity: 1,
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn a_cancel_after_release_ends_with_what_the_nodes_gave_up() {
        let p = |l: &str, shipped| {
            (
                l.to_string(),
                LineProgress {
                    shipped,
                    delivered: 0,
                },
            )
        };
        // Line 2 was backordered: cancelled with the request.
        let mut o = order();
        o.state = P::Released as i32;
        o.lines[1].quantity_backordered = 1;
        assert_eq!(request_cancel(&mut o).unwrap(), [("2".to_string(), 1)]);
        assert!(o.cancel_requested);
        // A second cancel (another request) asks the nodes nothing more.
        let twice = o.clone();
        assert_eq!(
            request_cancel(&mut o).unwrap_err().reason,
            "CANCEL_ALREADY_REQUESTED"
        );
        assert_eq!(o, twice, "a refused cancel changes nothing");
        assert_eq!(
            cancel(&mut o.clone()).unwrap_err().reason,
            "ILLEGAL_STATE_CHANGE"
        );
        // The node ships one unit of line 1 and gives the other up.
        cancelled_at(&mut o, "DC1", &[("1".to_string(), 1)]);
        assert_eq!(
            progressed(&mut o, &[p("1", 1)]),
            Ok(Some(OrderState::Shipped))
        );
        // Nothing shipped and everything given up: cancelled.
        let mut o = order();
        o.state = P::Released as i32;
        request_cancel(&mut o).unwrap();
        cancelled_at(&mut o, "DC1", &[("1".to_string(), 2), ("2".to_string(), 1)]);
        assert_eq!(
            progressed(&mut o, &[p("1", 0)]),
            Ok(Some(OrderState::Cancelled))
        );
        assert_eq!(
            request_cancel(&mut order()).unwrap_err().reason,
            "ILLEGAL_STATE_CHANGE",
            "before release a cancel is immediate"
        );
        // Line 1 shipped; only line 2's backordered unit was open: shipped.
        let mut o = order();
        o.state = P::PartiallyShipped as i32;
        o.lines[1].quantity_backordered = 1;
        request_cancel(&mut o).unwrap();
        assert_eq!(
            progressed(&mut o, &[p("1", 2)]),
            Ok(Some(OrderState::Shipped))
        );
    }

    #[test]
    fn shipments_move_a_released_order_to_delivered() {
        let mut o = order();
        o.state = P::Released as i32;
        let p = |l: &str, shipped, delivered| (l.to_string(), LineProgress { shipped, delivered });
        // Nothing shipped yet: no change.
        assert_eq!(progressed(&mut o, &[p("1", 0, 0)]), Ok(None));
        // Two fulfillment orders ship line 1 in halves.
        assert_eq!(
            progressed(&mut o, &[p("1", 1, 0)]),
            Ok(Some(OrderState::PartiallyShipped))
        );
        assert_eq!(
            progressed(&mut o, &[p("1", 1, 0), p("1", 1, 0), p("2", 1, 0)]),
            Ok(Some(OrderState::Shipped))
        );
        assert_eq!(o.lines[0].quantity_shipped, 2);
        assert_eq!(
            progressed(&mut o, &[p("1", 1, 1), p("1", 1, 1), p("2", 1, 1)]),
            Ok(Some(OrderState::Delivered))
        );
        assert_eq!(o.lines[1].quantity_delivered, 1);
        // Step by step, SHIPPED was its own change.
        assert_eq!(passed_through_shipped(OrderState::Shipped, &o), None);
        // A cancelled unit is not waited for.
        let mut o = order();
        o.state = P::Released as i32;
        o.lines[1].quantity_cancelled = 1;
        assert_eq!(
            progressed(&mut o, &[p("1", 2, 2)]),
            Ok(Some(OrderState::Delivered))
        );
        // Delivered in one report: the SHIPPED step, every unit shipped
        // and none delivered yet.
        let at = passed_through_shipped(OrderState::Released, &o).unwrap();
        assert_eq!(state(&at), OrderState::Shipped);
        let lines: Vec<(i64, i64)> = at
            .lines
            .iter()
            .map(|l| (l.quantity_shipped, l.quantity_delivered))
            .collect();
        assert_eq!(lines, [(2, 0), (0, 0)]);
    }

    #[test]
    fn rerouted_units_move_from_the_failed_node_to_the_new_one() {
        let mut o = order();
        let src = |n: &str, q| LineSourcing {
            node_id: n.into(),
            quantity: q,
            transfer_to_node_id: String::new(),
        };
        o.lines[0].sourcing = vec![src("DC1", 2)];
        o.lines[1].sourcing = vec![src("DC1", 1)];
        resourced(
            &mut o,
            "DC1",
            &[("1".into(), 1)],
            &[("1".into(), "DC2".into(), 1)],
        );
        assert_eq!(o.lines[0].sourcing, [src("DC1", 1), src("DC2", 1)]);
        assert_eq!(o.lines[1].sourcing, [src("DC1", 1)]);
    }

    fn hold(t: HoldType) -> Hold {
        Hold {
            r#type: t as i32,
            reason: "r".into(),
            ..Default::default()
        }
    }

    #[test]
    fn holds_stack_and_return_to_where_they_were() {
        let mut o = order();
        assert_eq!(
            place_hold(&mut o, hold(HoldType::Payment)),
            Ok(Some(OrderState::Created))
        );
        assert_eq!(place_hold(&mut o, hold(HoldType::Fraud)), Ok(None));
        assert_eq!(
            place_hold(&mut o, hold(HoldType::Fraud))
                .unwrap_err()
                .reason,
            "HOLD_EXISTS"
        );
        assert_eq!(
            release_hold(&mut o, HoldType::Payment, OrderState::Created),
            Ok(false)
        );
        assert_eq!(state(&o), OrderState::OnHold);
        assert_eq!(
            release_hold(&mut o, HoldType::Fraud, OrderState::Created),
            Ok(true)
        );
        assert_eq!(state(&o), OrderState::Created);
        assert_eq!(
            release_hold(&mut o, HoldType::Fraud, OrderState::Created)
                .unwrap_err()
                .reason,
            "NO_SUCH_HOLD"
        );
    }

    #[test]
    fn cancelling_every_line_cancels_the_order() {
        let mut o = order();
        let lq = |id: &str, q| LineQuantity {
            line_id: id.into(),
            quantity: q,
        };
        assert_eq!(
            cancel_lines(&mut o, &[lq("1", 3)]).unwrap_err().reason,
            "CANCEL_EXCEEDS_OPEN"
        );
        assert_eq!(
            cancel_lines(&mut o, &[lq("9", 1)]).unwrap_err().reason,
            "NO_SUCH_LINE"
        );
        assert_eq!(
            cancel_lines(&mut o, &[lq("1", 1)]).unwrap(),
            [("A".to_string(), String::new(), 1)]
        );
        assert_eq!(state(&o), OrderState::Created);
        cancel_lines(&mut o, &[lq("1", 1), lq("2", 1)]).unwrap();
        assert_eq!(state(&o), OrderState::Cancelled);
        assert_eq!(cancel(&mut o).unwrap_err().reason, "ILLEGAL_STATE_CHANGE");
    }

    #[test]
    fn edits_free_and_add_units_where_the_order_holds_them() {
        let mut o = order();
        let lq = |id: &str, q| LineQuantity {
            line_id: id.into(),
            quantity: q,
        };
        assert_eq!(
            edit_lines(&mut o, &[lq("1", 5)], Held::Nothing).unwrap(),
            Edit::default()
        );
        assert_eq!(o.lines[0].quantity, 5);
        reserved(&mut o).unwrap();
        let e = edit_lines(&mut o, &[lq("1", 6)], Held::Network).unwrap();
        assert_eq!(e.added, [("A".to_string(), String::new(), 1)]);
        let e = edit_lines(&mut o, &[lq("1", 3)], Held::Network).unwrap();
        assert_eq!(e.freed, [("A".to_string(), String::new(), 3)]);
        assert_eq!(o.lines[0].quantity, 3);
        // Routed: added units go to the node shipping most of the line.
        o.lines[0].sourcing = vec![
            LineSourcing {
                node_id: "DC1".into(),
                quantity: 1,
                transfer_to_node_id: String::new(),
            },
            LineSourcing {
                node_id: "DC2".into(),
                quantity: 2,
                transfer_to_node_id: String::new(),
            },
        ];
        let e = edit_lines(&mut o, &[lq("1", 5)], Held::AtNodes).unwrap();
        assert_eq!(e.added, [("A".to_string(), "DC2".to_string(), 2)]);
        assert_eq!(o.lines[0].sourcing[1].quantity, 4);
        assert_eq!(
            edit_lines(&mut o, &[lq("2", 5)], Held::AtNodes)
                .unwrap_err()
                .reason,
            "LINE_NOT_PLACED",
            "line 2 has no sourcing"
        );
    }

    #[test]
    fn backorders_name_the_short_lines() {
        let mut o = order();
        backordered(&mut o, &[("A".into(), 1)]).unwrap();
        assert_eq!(state(&o), OrderState::Backordered);
        assert_eq!(
            (
                o.lines[0].quantity_backordered,
                o.lines[1].quantity_backordered
            ),
            (1, 0)
        );
        reserved(&mut o).unwrap();
        assert_eq!(o.lines[0].quantity_backordered, 0);
        assert!(cancel(&mut o).is_ok());
    }

    #[test]
    fn a_sku_on_two_lines_is_short_once() {
        let mut o = order();
        let more_a = OrderLine {
            line_id: "3".into(),
            sku: "A".into(),
            quantity: 3,
            ..Default::default()
        };
        o.lines.push(more_a);
        let short = |o: &mut Order, a: i64| {
            short_on_hold(o, &[("A".into(), a)]);
            o.lines
                .iter()
                .map(|l| l.quantity_backordered)
                .collect::<Vec<_>>()
        };
        assert_eq!(short(&mut o, 1), [0, 0, 1], "the last line waits");
        assert_eq!(short(&mut o, 4), [1, 0, 3]);
        assert_eq!(short(&mut o, 9), [2, 0, 3], "no more than ordered");
    }
}
