use oms_kernel::Violations;
use oms_proto::inventory::Item;

/// Parses the item of a CreateItem request.
pub fn parse_new(item: Option<Item>) -> Result<Item, Violations> {
    let Some(mut item) = item else {
        return Err(Violations::one("item", "is required"));
    };
    let mut v = Violations::new();
    v.check("item.sku", super::check_sku(&item.sku));
    check_fields(&mut v, &item);
    item.name = format!("items/{}", item.sku);
    v.into_result(item)
}

pub fn check_fields(v: &mut Violations, item: &Item) {
    if item.description.len() > 1024 {
        v.add("item.description", "must be at most 1024 characters");
    }
    if item.expiry_tracked && !item.lot_tracked {
        v.add(
            "item.expiry_tracked",
            "expiry is tracked per lot: set lot_tracked too",
        );
    }
    let max = super::expiry::MAX_SHELF_LIFE_DAYS;
    if !(0..=max).contains(&item.min_shelf_life_days) {
        v.add(
            "item.min_shelf_life_days",
            format!("must be 0 to {max} days"),
        );
    } else if item.min_shelf_life_days > 0 && !item.expiry_tracked {
        v.add(
            "item.min_shelf_life_days",
            "a minimum shelf life counts from expiry dates: set expiry_tracked too",
        );
    }
}

/// Whether units in `lot` that movements reach under `before` are out of
/// their reach under `after`: a lot-tracked item's movements name a lot
/// and others' name none, and once serial numbers are on, a shipment
/// names one per unit, which units received without any lack. (Units a
/// change brings back into reach, such as lot-less units of a lot-tracked
/// item switched back, are not stranded.)
pub fn strands(before: &Item, after: &Item, lot: &str) -> bool {
    let reachable = |item: &Item| item.lot_tracked != lot.is_empty();
    (reachable(before) && !reachable(after)) || (after.serial_tracked && !before.serial_tracked)
}

/// Whether a change may strand units at all: units outside lots or in
/// one (see [`strands`]).
pub fn tracking_changed(before: &Item, after: &Item) -> bool {
    ["", "any lot"]
        .into_iter()
        .any(|lot| strands(before, after, lot))
}

/// Applies the fields of `update_mask` from `patch` to `current`.
pub fn apply_update(current: &mut Item, patch: &Item, paths: &[String]) -> Result<(), Violations> {
    let mut v = Violations::new();
    for p in paths {
        match p.as_str() {
            "description" => current.description = patch.description.clone(),
            "lot_tracked" => current.lot_tracked = patch.lot_tracked,
            "expiry_tracked" => current.expiry_tracked = patch.expiry_tracked,
            "serial_tracked" => current.serial_tracked = patch.serial_tracked,
            "min_shelf_life_days" => current.min_shelf_life_days = patch.min_shelf_life_days,
            other => v.add("update_mask", format!("{other:?} cannot be updated")),
        }
    }
    if paths.is_empty() {
        v.add("update_mask", "name at least one field");
    }
    check_fields(&mut v, current);
    v.into_result(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tracking_change_strands_what_it_puts_out_of_reach() {
        let plain = Item::default();
        let lots = Item {
            lot_tracked: true,
            ..Default::default()
        };
        let serials = Item {
            serial_tracked: true,
            ..Default::default()
        };
        assert!(strands(&plain, &lots, ""));
        assert!(strands(&lots, &plain, "L1"));
        // Lot-less units of a lot-tracked item (stranded already) come
        // back when lots are switched off.
        assert!(!strands(&lots, &plain, ""));
        assert!(strands(&plain, &serials, ""));
        assert!(!strands(&serials, &plain, ""));
        assert!(!tracking_changed(&serials, &plain));
        assert!(tracking_changed(&lots, &plain));
    }
}
