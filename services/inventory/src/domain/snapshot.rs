//! Rows of a stock snapshot: each sets the on-hand of one node, SKU and
//! lot, as a cycle count.
use super::movement::MAX_UNITS;
use super::{check_node_id, check_sku};
use oms_kernel::{Violation, Violations};
use oms_proto::inventory::SnapshotRow;
use std::collections::BTreeMap;

/// The first thing wrong with a row on its own.
pub fn check_row(row: &SnapshotRow) -> Option<Violation> {
    let mut v = Violations::new();
    v.check("node_id", check_node_id(&row.node_id));
    v.check("sku", check_sku(&row.sku));
    if !(0..=MAX_UNITS).contains(&row.on_hand) {
        v.add("on_hand", format!("must be 0 to {MAX_UNITS}"));
    }
    v.check("expiry_date", oms_kernel::check_date(&row.expiry_date));
    v.0.into_iter().next()
}

/// The rows (among those `counted`) that give the same node, SKU and lot
/// another figure than one row: which one stands would be a guess (a WMS
/// that exports each bin on its own row means their sum, a corrected
/// export the last), so none of them applies. Each with why.
pub fn repeated(rows: &[SnapshotRow], counted: impl Fn(usize) -> bool) -> BTreeMap<usize, String> {
    let mut by_key: BTreeMap<(&str, &str, &str), Vec<usize>> = BTreeMap::new();
    for (i, r) in rows.iter().enumerate().filter(|(i, _)| counted(*i)) {
        let key = (r.node_id.as_str(), r.sku.as_str(), r.lot.as_str());
        by_key.entry(key).or_default().push(i);
    }
    let mut out = BTreeMap::new();
    for ((node, sku, lot), at) in by_key.into_iter().filter(|(_, at)| at.len() > 1) {
        let lot = if lot.is_empty() {
            String::new()
        } else {
            format!(" lot {lot}")
        };
        let list: Vec<String> = at.iter().map(usize::to_string).collect();
        let why = format!(
            "rows {} all count {sku}{lot} at {node}: a snapshot gives each node, SKU and lot one figure (add up bins first); none of these rows is applied",
            list.join(", ")
        );
        for i in at {
            out.insert(i, why.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(node: &str, sku: &str, lot: &str, on_hand: i64) -> SnapshotRow {
        SnapshotRow {
            node_id: node.into(),
            sku: sku.into(),
            lot: lot.into(),
            on_hand,
            ..Default::default()
        }
    }

    #[test]
    fn rows_counting_one_key_twice_are_named_together() {
        let rows = [
            row("DC1", "A", "", 4),
            row("DC1", "A", "L1", 2),
            row("DC2", "A", "", 1),
            row("DC1", "A", "", 5),
            row("DC1", "A", "", -1),
        ];
        let all = repeated(&rows, |_| true);
        assert_eq!(all.keys().copied().collect::<Vec<_>>(), [0, 3, 4]);
        assert!(
            all[&0].starts_with("rows 0, 3, 4 all count A at DC1:"),
            "{}",
            all[&0]
        );
        // A row refused on its own gives no figure.
        let counted = repeated(&rows, |i| check_row(&rows[i]).is_none());
        assert_eq!(counted.keys().copied().collect::<Vec<_>>(), [0, 3]);
        assert_eq!(check_row(&rows[4]).unwrap().field, "on_hand");
        let lots = [row("DC1", "A", "L1", 1), row("DC1", "A", "L1", 1)];
        assert!(repeated(&lots, |_| true)[&1].contains("A lot L1 at DC1"));
    }
}
