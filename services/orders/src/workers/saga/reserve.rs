//! The `reserve` step: holds an order's open lines in inventory, all or
//! none, or backorders the order (short stock, or older orders waiting
//! for the stock first) and has it wait for stock.
use super::*;

impl Saga {
    pub(super) async fn reserve(
        &self,
        tx: &mut PgConnection,
        side: &mut PgConnection,
        tenant: &Tenant,
        s: &Step,
    ) -> anyhow::Result<()> {
        let Some((mut o, held_from)) = lock_for_step(tx, tenant, s).await? else {
            return Ok(());
        };
        let from = lifecycle::state(&o);
        // A payment hold keeps an order from its warehouse, not from its
        // stock: it reserves while the payment comes (so other channels
        // cannot sell those units meanwhile) and stops there.
        let unpaid = lifecycle::awaits_payment_only(&o)
            && matches!(
                held_from,
                Some(OrderState::Created | OrderState::Backordered)
            );
        let placing = if unpaid {
            held_from.unwrap_or(from)
        } else {
            from
        };
        if !matches!(placing, OrderState::Created | OrderState::Backordered) {
            // Held or cancelled meanwhile: releasing the hold enqueues it again.
            placement_over(tx, tenant, s, held_from.unwrap_or(from)).await?;
            repo::saga::done(tx, s).await?;
            return Ok(());
        }
        let lines: Vec<ReservationLine> = lifecycle::open_quantity(&o)
            .into_iter()
            .map(|(_, sku, q)| ReservationLine {
                sku,
                quantity: q,
                ..Default::default()
            })
            .collect();
        // As for the confirmation and the release: a reservation this
        // attempt leaves unrecorded holds the lines as they are.
        let first = doubt(side, tenant, s).await?;
        // Older orders waiting for these SKUs go first: the units they
        // wait for are theirs (a woken step retried early, a new order
        // made in the instant before a wake, would take them). Not when
        // an earlier attempt may have reserved already (`first` false):
        // the same request's answer from inventory settles that.
        if first {
            let me = Waiter {
                order_id: s.order_id,
                step: s.step.clone(),
                since: order_turn(&o),
                channel: o.channel.clone(),
                needs: units_per_sku(&lines),
            };
            let behind = stock_line::behind_older(tx, &self.peers, tenant, &me).await;
            if !matches!(&behind, Ok(missing) if missing.is_empty()) {
                // This attempt ends here, having asked inventory for nothing.
                settle_doubt(tx, tenant, s, true).await?;
                let missing = match behind {
                    Ok(missing) => missing,
                    // The availability read was not answered: retried as
                    // the reservation would be (its breaker included).
                    Err(e) => return self.retry_failed(tx, s, &e.downcast()?).await,
                };
                let short = Short {
                    missing,
                    behind_older: true,
                };
                let held = (&mut o, held_from);
                return self.backorder(tx, tenant, s, held, unpaid, short).await;
            }
        }
        let req = CreateReservationRequest {
            reservation_id: reservation_id_of(&o),
            lines,
            ttl: prost_types::Duration::try_from(RESERVATION_TTL).ok(),
            reference: o.name.clone(),
            channel: o.channel.clone(),
            // The units its backorders wait for are its to give out.
            backorders_of: crate::workers::demand_publisher::SOURCE.to_owned(),
        };
        let answer = self.peers.inventory(tenant).create_reservation(req).await;
        settle_doubt(tx, tenant, s, settles(first, &answer)).await?;
        match answer {
            Ok(_) if unpaid => {
                // Still on hold: its release goes on to routing.
                lifecycle::reserved_on_hold(&mut o);
                let happened = on_hold_placement("stock reserved while the order awaits payment");
                let held_from = Some(OrderState::Reserved);
                record(
                    tx, tenant, s.order_id, &mut o, held_from, from, ACTOR, "", happened,
                )
                .await?;
                repo::saga::done(tx, s).await?;
                let expires = Utc::now() + RESERVATION_TTL;
                crate::workers::held_expiry::watch(tx, tenant, s.order_id, expires).await?;
            }
            Ok(_) => {
                lifecycle::reserved(&mut o).map_err(|r| anyhow::anyhow!(r.message))?;
                let happened =
                    Happened::state_changed(from, OrderState::Reserved, "stock reserved");
                record(
                    tx, tenant, s.order_id, &mut o, held_from, from, ACTOR, "", happened,
                )
                .await?;
                repo::saga::done(tx, s).await?;
                let (route, key) = route_step();
                repo::saga::enqueue(tx, tenant, s.order_id, &route, &key).await?;
            }
            Err(st)
                if st.code() == Code::FailedPrecondition
                    && oms_runtime::status::reason(&st) == "INSUFFICIENT_STOCK" =>
            {
                let short = Short {
                    missing: missing_units(&st),
                    behind_older: false,
                };
                self.backorder(tx, tenant, s, (&mut o, held_from), unpaid, short)
                    .await?;
            }
            Err(st)
                if matches!(
                    st.code(),
                    Code::InvalidArgument
                        | Code::NotFound
                        | Code::FailedPrecondition
                        | Code::PermissionDenied
                ) =>
            {
                // Refused for good: a person must look at it.
                let reason = format!("placement refused by inventory: {}", st.message());
                hold_for_review(tx, tenant, s.order_id, (&mut o, held_from), from, reason).await?;
                repo::saga::done(tx, s).await?;
            }
            Err(st) => {
                self.retry_failed(tx, s, &st).await?;
            }
        }
        Ok(())
    }
}

/// Reservations live while routing and release are still to come.
const RESERVATION_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

pub fn reservation_id(order_id: uuid::Uuid) -> String {
    format!("order-{order_id}")
}

/// The reservation holding `o`'s units (`Order.reservation`; an order
/// stored before 2026-12-04 has none: its first, `order-{id}`).
pub fn reservation_name(o: &oms_proto::orders::Order) -> String {
    if o.reservation.is_empty() {
        format!("reservations/order-{}", o.order_id)
    } else {
        o.reservation.clone()
    }
}

/// The id of the reservation holding `o`'s units: [`reservation_name`]
/// without its collection.
pub(super) fn reservation_id_of(o: &oms_proto::orders::Order) -> String {
    let name = reservation_name(o);
    name.strip_prefix("reservations/")
        .unwrap_or(&name)
        .to_owned()
}

/// The reservation to place `o` under once its current one expired
/// unconfirmed: `order-{id}-{n}`, `n` from 2. A reservation id is never
/// used twice (inventory answers a repeat with the first result: expired).
pub(crate) fn next_reservation(o: &oms_proto::orders::Order) -> String {
    let first = format!("reservations/order-{}", o.order_id);
    let current = reservation_name(o);
    let n = (current.strip_prefix(&first))
        .and_then(|rest| rest.strip_prefix('-'))
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or(1);
    format!("{first}-{}", n + 1)
}

/// Why a reservation attempt came back short: the units missing per SKU,
/// and whether they are there but older orders waiting for them come
/// first.
struct Short {
    missing: Vec<(String, i64)>,
    behind_older: bool,
}

impl Saga {
    /// Records that the order (locked, held from `held_from`) is short of
    /// `short`, backordered (or short while it awaits payment), and has
    /// its step wait for the stock.
    async fn backorder(
        &self,
        tx: &mut PgConnection,
        tenant: &Tenant,
        s: &Step,
        (o, held_from): (&mut oms_proto::orders::Order, Option<OrderState>),
        unpaid: bool,
        short: Short,
    ) -> anyhow::Result<()> {
        let from = lifecycle::state(o);
        let placing = if unpaid {
            held_from.unwrap_or(from)
        } else {
            from
        };
        let missing = short.missing;
        let before: Vec<i64> = o.lines.iter().map(|l| l.quantity_backordered).collect();
        if unpaid {
            lifecycle::short_on_hold(o, &missing);
        } else {
            lifecycle::backordered(o, &missing).map_err(|r| anyhow::anyhow!(r.message))?;
        }
        let after: Vec<i64> = o.lines.iter().map(|l| l.quantity_backordered).collect();
        if placing != OrderState::Backordered || before != after {
            let mut what = missing
                .iter()
                .map(|(sku, q)| format!("{sku} ({q} missing)"))
                .collect::<Vec<_>>()
                .join(", ");
            if short.behind_older {
                what.push_str("; older orders waiting for it come first");
            }
            let (happened, held_from) = if unpaid {
                let why = format!("short while the order awaits payment: {what}");
                (on_hold_placement(&why), Some(OrderState::Backordered))
            } else {
                let to = OrderState::Backordered;
                let why = format!("short: {what}");
                (Happened::state_changed(from, to, why), held_from)
            };
            record(
                tx, tenant, s.order_id, o, held_from, from, ACTOR, "", happened,
            )
            .await?;
        }
        // Stock that comes wakes the order (oldest first) through the
        // inventory feed, so its backoff (5 s, then 5 s longer at each
        // attempt, up to 5 minutes; 1 minute before the feed woke orders)
        // is for what the feed does not say.
        let wanted: Vec<(String, i64)> = lifecycle::open_quantity(o)
            .into_iter()
            .filter(|(_, sku, _)| missing.iter().any(|(m, _)| m == sku))
            .map(|(_, sku, q)| (sku, q))
            .collect();
        wait_for_stock(tx, tenant, s, o, &wanted).await?;
        let wait = Duration::from_secs(5 * (1 + s.attempts.min(59) as u64));
        repo::saga::retry(tx, s, "insufficient stock", Utc::now() + wait).await?;
        Ok(())
    }
}

/// Says that step `s` of order `o` waits for `wanted` (units per SKU,
/// all it asks of each SKU missing), and follows the tenant's inventory
/// feed so that stock coming wakes it (see `workers::stock_feed`).
pub(crate) async fn wait_for_stock(
    tx: &mut PgConnection,
    tenant: &Tenant,
    s: &Step,
    o: &oms_proto::orders::Order,
    wanted: &[(String, i64)],
) -> anyhow::Result<()> {
    let turn = (order_turn(o), o.channel.as_str());
    repo::stock_waits::wait_for(tx, tenant, (s.order_id, &s.step), turn, wanted).await?;
    repo::feeds::follow(&mut *tx, repo::feeds::INVENTORY, tenant).await?;
    Ok(())
}

/// An order's turn among those waiting for stock: its creation.
fn order_turn(o: &oms_proto::orders::Order) -> chrono::DateTime<Utc> {
    o.create_time
        .as_ref()
        .and_then(oms_runtime::time::from_timestamp)
        .unwrap_or_else(Utc::now)
}

/// Units per SKU of a reservation's lines.
fn units_per_sku(lines: &[ReservationLine]) -> Vec<(String, i64)> {
    let mut units: Vec<(String, i64)> = Vec::new();
    for l in lines {
        match units.iter_mut().find(|(sku, _)| *sku == l.sku) {
            Some((_, q)) => *q += l.quantity,
            None => units.push((l.sku.clone(), l.quantity)),
        }
    }
    units
}

/// Units missing per SKU, from inventory's PreconditionFailure violations
/// (`items/SKU-1`: "3 available, 5 requested"), in the order inventory
/// named them. A SKU short in the network and in the channel's pool too
/// (`channels/web/items/SKU-1`) is missing the larger figure: before, it
/// was listed twice ("short: B (1 missing), B (1 missing)").
fn missing_units(st: &tonic::Status) -> Vec<(String, i64)> {
    let details = st.get_error_details();
    let Some(pf) = details.precondition_failure() else {
        return vec![];
    };
    let mut missing: Vec<(String, i64)> = Vec::new();
    for v in &pf.violations {
        let Some(sku) = v.subject.rsplit('/').next() else {
            continue;
        };
        let mut nums = (v.description.split(|c: char| !c.is_ascii_digit()))
            .filter(|s| !s.is_empty())
            .map(str::parse::<i64>);
        let (Some(Ok(have)), Some(Ok(want))) = (nums.next(), nums.next()) else {
            continue;
        };
        let units = (want - have).max(0);
        match missing.iter_mut().find(|(s, _)| s == sku) {
            Some((_, m)) => *m = (*m).max(units),
            None => missing.push((sku.to_owned(), units)),
        }
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sku_short_in_the_network_and_its_pool_is_missing_once() {
        use tonic_types::{ErrorDetails, PreconditionViolation};
        let short = |subject: &str, description: &str| PreconditionViolation {
            r#type: "INSUFFICIENT_STOCK".into(),
            subject: subject.into(),
            description: description.into(),
        };
        let st = tonic::Status::with_error_details(
            Code::FailedPrecondition,
            "not enough stock",
            ErrorDetails::with_precondition_failure(vec![
                short("channels/web/items/P", "0 available, 2 requested"),
                short("items/M", "1 available, 2 requested"),
                short("channels/web/items/M", "0 available, 2 requested"),
                short("items/X", "garbled"),
            ]),
        );
        assert_eq!(missing_units(&st), [("P".into(), 2), ("M".into(), 2)]);
    }
}
