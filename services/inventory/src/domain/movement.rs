use crate::gate::Line;
use oms_kernel::Violations;
use oms_proto::inventory::{Item, MovementKind, StockMovement};
use std::collections::HashMap;

/// Largest single movement, count, safety stock or buffer: guards against
/// typos like an extra zero row, and keeps figures far below where the
/// gate's Lua numbers (doubles) lose integer precision.
pub const MAX_UNITS: i64 = 1_000_000_000;

/// How a movement changes on-hand, given the lot's current on-hand: a
/// cycle count sets it, every other kind adds its signed quantity.
pub fn delta(m: &StockMovement, on_hand: i64) -> i64 {
    match MovementKind::try_from(m.kind) {
        // parse() requires the count; none would change nothing.
        Ok(MovementKind::CycleCount) => m.counted_quantity.unwrap_or(on_hand) - on_hand,
        _ => m.quantity,
    }
}

/// Parses a movement sent to RecordMovement (transfers have their own RPC);
/// what it does to on-hand is decided with the current figure, in the
/// ledger transaction.
pub fn parse(m: Option<StockMovement>) -> Result<StockMovement, Violations> {
    let Some(m) = m else {
        return Err(Violations::one("movement", "is required"));
    };
    let mut v = Violations::new();
    v.check("movement.node_id", super::check_node_id(&m.node_id));
    v.check("movement.sku", super::check_sku(&m.sku));
    let kind = MovementKind::try_from(m.kind).unwrap_or(MovementKind::Unspecified);
    let q = m.quantity;
    let sign_error = match kind {
        MovementKind::Unspecified => Some("choose a movement kind"),
        MovementKind::TransferOut | MovementKind::TransferIn => Some(
            "transfers are recorded with TransferStock (and ReceiveTransfer for one in transit)",
        ),
        MovementKind::Receipt | MovementKind::ReturnRestock if q <= 0 => {
            Some("must be positive for receipts and restocks")
        }
        MovementKind::Shipment | MovementKind::Damage if q >= 0 => {
            Some("must be negative for shipments and damage (units leaving)")
        }
        MovementKind::Adjustment if q == 0 => Some("must not be zero"),
        _ => None,
    };
    if let Some(e) = sign_error {
        let field = if kind == MovementKind::Unspecified
            || matches!(kind, MovementKind::TransferOut | MovementKind::TransferIn)
        {
            "movement.kind"
        } else {
            "movement.quantity"
        };
        v.add(field, e);
    }
    if q.abs() > MAX_UNITS {
        v.add("movement.quantity", format!("must be within ±{MAX_UNITS}"));
    }
    if kind == MovementKind::CycleCount {
        match m.counted_quantity {
            // Without this a count that only set `quantity` (output only
            // for counts) was taken as a count of zero and emptied the node.
            None => v.add(
                "movement.counted_quantity",
                "is required for cycle counts: the counted on-hand (0 counts the stock out)",
            ),
            Some(c) if !(0..=MAX_UNITS).contains(&c) => v.add(
                "movement.counted_quantity",
                format!("must be 0 to {MAX_UNITS}"),
            ),
            Some(_) => {}
        }
    }
    if matches!(kind, MovementKind::Adjustment | MovementKind::Damage) && m.reason.trim().is_empty()
    {
        v.add("movement.reason", "is required for adjustments and damage");
    }
    let happened = oms_runtime::time::check_happened(m.occur_time.as_ref(), chrono::Utc::now());
    v.check("movement.occur_time", happened);
    v.at_most("movement.reason", &m.reason, 500);
    v.at_most("movement.reference", &m.reference, 200);
    v.check(
        "movement.expiry_date",
        oms_kernel::check_date(&m.expiry_date),
    );
    v.into_result(m)
}

/// Checks a movement against how its item is tracked.
pub fn check_tracking(
    item: &Item,
    lot: &str,
    expiry: &str,
    serials: &[String],
    units: i64,
    prefix: &str,
) -> Violations {
    let mut v = Violations::new();
    if item.lot_tracked && lot.trim().is_empty() {
        v.add(
            format!("{prefix}lot"),
            format!("{} is lot-tracked: name the lot", item.sku),
        );
    } else if item.lot_tracked {
        v.check(format!("{prefix}lot"), oms_kernel::check_label(lot));
    }
    if !item.lot_tracked && !lot.is_empty() {
        v.add(
            format!("{prefix}lot"),
            format!("{} is not lot-tracked", item.sku),
        );
    }
    if item.expiry_tracked && units > 0 && expiry.is_empty() {
        v.add(
            format!("{prefix}expiry_date"),
            format!("{} tracks expiry: give the lot's expiry date", item.sku),
        );
    }
    if item.serial_tracked && units != 0 && serials.len() as i64 != units.abs() {
        v.add(
            format!("{prefix}serial_numbers"),
            format!(
                "{} is serial-tracked: give one serial number per unit",
                item.sku
            ),
        );
    }
    // Other items' serial numbers are kept on the movement as they came
    // (a WMS may report them for any item, blank ones too) and tracked
    // nowhere, but what they say follows the same rule.
    let mut seen = std::collections::HashSet::new();
    for (i, s) in serials.iter().enumerate() {
        if !item.serial_tracked && s.is_empty() {
            continue;
        }
        let label = oms_kernel::check_label(s);
        if label.is_err() {
            v.check(format!("{prefix}serial_numbers[{i}]"), label);
        } else if item.serial_tracked && !seen.insert(s) {
            v.add(
                format!("{prefix}serial_numbers[{i}]"),
                format!("{s:?} is given twice"),
            );
        }
    }
    v
}

/// Checks the entries of a shipment (ConsumeAllocations' `shipped`)
/// against how their items are tracked, as their movements will be, but
/// with the request's field paths and before the gate consumes anything.
/// A serial number ships once per request. A lot named for an item that
/// is not lot-tracked is ignored (WMSs report one for every item), and
/// entries of unknown items are left to the reservation's own checks.
pub fn check_shipped(field: &str, entries: &[Line], items: &HashMap<String, Item>) -> Violations {
    let mut v = Violations::new();
    let mut shipped: HashMap<(&str, &str), usize> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        let Some(item) = items.get(&e.sku) else {
            continue;
        };
        let lot = if item.lot_tracked { e.lot.as_str() } else { "" };
        let prefix = format!("{field}[{i}].");
        v.merge(check_tracking(item, lot, "", &e.serials, -e.q, &prefix).into_result(()));
        if !item.serial_tracked {
            continue;
        }
        for (j, s) in e.serials.iter().enumerate() {
            match shipped.get(&(e.sku.as_str(), s.as_str())) {
                Some(&k) if k != i => v.add(
                    format!("{prefix}serial_numbers[{j}]"),
                    format!("{s:?} is shipped by {field}[{k}] too"),
                ),
                _ => {
                    shipped.insert((&e.sku, s), i);
                }
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(kind: MovementKind, q: i64) -> Option<StockMovement> {
        Some(StockMovement {
            kind: kind as i32,
            node_id: "DC1".into(),
            sku: "SKU-1".into(),
            quantity: q,
            reason: "count".into(),
            ..Default::default()
        })
    }

    #[test]
    fn signs_follow_kinds() {
        assert!(parse(m(MovementKind::Receipt, 5)).is_ok());
        assert!(parse(m(MovementKind::Receipt, -5)).is_err());
        assert!(parse(m(MovementKind::Shipment, -2)).is_ok());
        assert!(parse(m(MovementKind::Shipment, 2)).is_err());
        assert!(parse(m(MovementKind::Damage, -1)).is_ok());
        assert!(parse(m(MovementKind::Adjustment, 0)).is_err());
        assert!(parse(m(MovementKind::TransferIn, 3)).is_err());
        assert!(parse(m(MovementKind::Unspecified, 3)).is_err());
    }

    #[test]
    fn cycle_counts_set_on_hand() {
        let mut cc = m(MovementKind::CycleCount, 0).unwrap();
        cc.counted_quantity = Some(7);
        let n = parse(Some(cc)).unwrap();
        assert_eq!(delta(&n, 10), -3);
        assert_eq!(delta(&n, 2), 5);
    }

    #[test]
    fn a_cycle_count_names_its_count() {
        // `quantity` is output only for counts: sent alone, it is no count.
        let only_quantity = parse(m(MovementKind::CycleCount, -3)).unwrap_err();
        assert_eq!(only_quantity.0.len(), 1, "{only_quantity:?}");
        assert_eq!(only_quantity.0[0].field, "movement.counted_quantity");
        let mut zero = m(MovementKind::CycleCount, 0).unwrap();
        zero.counted_quantity = Some(0);
        assert_eq!(delta(&parse(Some(zero)).unwrap(), 4), -4);
    }

    #[test]
    fn tracking_rules() {
        let item = Item {
            sku: "S".into(),
            lot_tracked: true,
            expiry_tracked: true,
            ..Default::default()
        };
        assert_eq!(check_tracking(&item, "", "", &[], 5, "").0.len(), 2);
        assert!(check_tracking(&item, "L1", "2027-01-01", &[], 5, "").is_empty());
        let serial = Item {
            sku: "S".into(),
            serial_tracked: true,
            ..Default::default()
        };
        assert_eq!(
            check_tracking(&serial, "", "", &["a".into()], 2, "")
                .0
                .len(),
            1
        );
        let fields = |serials: &[&str], units: i64, item: &Item| -> Vec<String> {
            let serials: Vec<String> = serials.iter().map(|s| s.to_string()).collect();
            check_tracking(item, "", "", &serials, units, "m.")
                .0
                .into_iter()
                .map(|v| v.field)
                .collect()
        };
        assert!(fields(&["a", "b"], -2, &serial).is_empty());
        assert_eq!(fields(&["a", "a"], 2, &serial), ["m.serial_numbers[1]"]);
        assert_eq!(fields(&["a", " "], 2, &serial), ["m.serial_numbers[1]"]);
        let plain = Item {
            sku: "P".into(),
            ..Default::default()
        };
        assert!(fields(&["a", "a"], 1, &plain).is_empty());
    }
}
