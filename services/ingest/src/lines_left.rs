//! What a later version of a channel order does to the order's lines: the
//! channel says what is left of each after refunds and order edits there
//! ([`crate::adapters::Mapped::left`]).
use oms_proto::orders as ord;

/// What brings `order`'s lines down to `left` (line id, units the channel
/// says are left): edits to new totals (cancelled units kept) and cancels
/// of lines left with nothing. Only down: units the order no longer has
/// were cancelled in the OMS (out of stock, by hand), which a channel that
/// still sells them must not undo on its next update; units or lines the
/// channel added are told in the log, to be added by hand.
pub fn changes(
    order: &ord::Order,
    left: &[(String, i64)],
) -> (Vec<ord::LineQuantity>, Vec<ord::LineQuantity>) {
    let (mut edits, mut cancels) = (Vec::new(), Vec::new());
    for (line_id, units) in left {
        let Some(l) = order.lines.iter().find(|l| &l.line_id == line_id) else {
            if *units > 0 {
                tracing::warn!(order = %order.name, line = %line_id, units,
                    "a line added in the channel is not on the order; add it by hand");
            }
            continue;
        };
        let open = l.quantity - l.quantity_cancelled;
        let change = |quantity| ord::LineQuantity {
            line_id: line_id.clone(),
            quantity,
        };
        match *units {
            u if u > open => {
                tracing::warn!(order = %order.name, line = %line_id, units, open,
                    "the channel has more units of a line than the order; add them by hand");
            }
            u if u == open => {}
            0 => cancels.push(change(open)),
            u => edits.push(change(l.quantity_cancelled + u)),
        }
    }
    (edits, cancels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: &str, quantity: i64, cancelled: i64) -> ord::OrderLine {
        ord::OrderLine {
            line_id: id.into(),
            quantity,
            quantity_cancelled: cancelled,
            ..Default::default()
        }
    }

    fn quantities(v: &[ord::LineQuantity]) -> Vec<(&str, i64)> {
        v.iter().map(|l| (l.line_id.as_str(), l.quantity)).collect()
    }

    #[test]
    fn lines_come_down_to_what_the_channel_left_and_never_go_up() {
        let order = ord::Order {
            lines: vec![
                line("a", 3, 0),
                line("b", 2, 0),
                line("c", 4, 1),
                line("d", 1, 1),
            ],
            ..Default::default()
        };
        let left = [
            ("a".to_string(), 3), // as ordered: nothing
            ("b".to_string(), 0), // refunded in full: cancel what is open
            ("c".to_string(), 2), // fewer: a total of 1 cancelled + 2
            ("d".to_string(), 1), // cancelled in the OMS: not brought back
            ("e".to_string(), 5), // added in the channel: not on the order
        ];
        let (edits, cancels) = changes(&order, &left);
        assert_eq!(quantities(&edits), [("c", 3)]);
        assert_eq!(quantities(&cancels), [("b", 2)]);
    }
}
