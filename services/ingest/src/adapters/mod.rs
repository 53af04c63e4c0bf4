//! Channel payload adapters: each turns a channel's own order format into
//! the canonical order, naming the JSON path of anything it cannot map.
pub mod amazon;
pub mod amazon_2026;
pub mod mercadolibre;
pub mod money;
pub mod shopify;
pub mod trendyol;
pub mod woocommerce;

use oms_kernel::Violations;
use oms_proto::common::Money;
use oms_proto::orders::{Order, OrderLine};
use serde_json::Value;

/// What a payload says about its order.
#[derive(Debug, Clone, Default)]
pub struct Mapped {
    pub order: Order,
    /// The channel cancelled the order.
    pub cancelled: bool,
    /// What the channel says is left of each line (line id, units) after
    /// refunds and order edits there, lines left with nothing included:
    /// a later version brings the order's lines to it. Empty when the
    /// channel does not say (its lines are what was ordered).
    pub left: Vec<(String, i64)>,
    /// The channel has not been paid yet (why, for the hold): a new order
    /// is created on a payment hold, which a later, paid version releases.
    pub awaiting_payment: Option<String>,
}

/// Amounts in `currency`, as an order's lines and totals carry them.
pub fn in_currency(currency: &str) -> impl Fn(Option<i64>) -> Option<Money> + '_ {
    move |amount| {
        amount.map(|amount_minor| Money {
            currency_code: currency.to_owned(),
            amount_minor,
        })
    }
}

/// The sum of amounts; `None` when it does not fit an amount (a payload
/// may send any amount an i64 holds).
pub fn sum(amounts: impl IntoIterator<Item = i64>) -> Option<i64> {
    amounts.into_iter().try_fold(0_i64, i64::checked_add)
}

/// Price × quantity over `lines`, the subtotal of channels that send none;
/// `None` when it does not fit an amount.
pub fn subtotal(lines: &[OrderLine]) -> Option<i64> {
    lines.iter().try_fold(0_i64, |sum, l| {
        let price = l.unit_price.as_ref().map_or(0, |m| m.amount_minor);
        sum.checked_add(price.checked_mul(l.quantity)?)
    })
}

/// The lines of an order as what is left of each (`left`, in the same
/// order: units per line after refunds, edits and cancellations in the
/// channel): lines with nothing left go, the others keep their units left
/// (their discount and tax in proportion when the channel's are for the
/// units ordered: `in_proportion`). With nothing left at all, the lines as
/// ordered and `true`: the order as placed, to be cancelled.
pub fn what_is_left(
    ordered: Vec<OrderLine>,
    left: &[(String, i64)],
    in_proportion: bool,
) -> (Vec<OrderLine>, bool) {
    if left.iter().all(|(_, units)| *units == 0) {
        return (ordered, true);
    }
    let lines = ordered
        .into_iter()
        .zip(left)
        .filter(|(_, (_, units))| *units > 0)
        .map(|(l, (_, units))| match in_proportion {
            true => part_of(l, *units),
            false => OrderLine {
                quantity: *units,
                ..l
            },
        })
        .collect();
    (lines, false)
}

/// `line` with `units` of its ordered quantity: its discount and tax in
/// proportion (rounded down).
fn part_of(line: OrderLine, units: i64) -> OrderLine {
    // (A quantity of 0 or less is refused on its path; nothing to share.)
    if units == line.quantity || line.quantity <= 0 {
        return OrderLine {
            quantity: units,
            ..line
        };
    }
    let part = |m: Option<Money>| {
        m.map(|m| {
            let share = i128::from(m.amount_minor) * i128::from(units) / i128::from(line.quantity);
            Money {
                amount_minor: i64::try_from(share).unwrap_or(m.amount_minor),
                ..m
            }
        })
    };
    OrderLine {
        discount: part(line.discount.clone()),
        tax: part(line.tax.clone()),
        quantity: units,
        ..line
    }
}

/// Why an order awaits payment in its channel, when `status` is one of
/// `unpaid`.
pub fn unpaid(channel: &str, status: &str, unpaid: &[&str]) -> Option<String> {
    unpaid
        .contains(&status)
        .then(|| format!("awaiting payment in {channel} (status {status})"))
}

/// Reads fields of a JSON document, collecting every problem with its path.
pub struct Reader<'a> {
    pub root: &'a Value,
    pub v: Violations,
}

impl<'a> Reader<'a> {
    pub fn new(root: &'a Value) -> Self {
        Self {
            root,
            v: Violations::new(),
        }
    }

    pub fn at(&self, path: &[&str]) -> Option<&'a Value> {
        let mut cur = self.root;
        for p in path {
            cur = cur.get(*p)?;
        }
        (!cur.is_null()).then_some(cur)
    }

    fn field(path: &[&str]) -> String {
        format!("body.{}", path.join("."))
    }

    /// A string (numbers are written out, never through a float).
    pub fn string(&mut self, path: &[&str], required: bool) -> String {
        match self.at(path) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(_) => {
                self.v.add(Self::field(path), "must be a string");
                String::new()
            }
            None if required => {
                self.v.add(Self::field(path), "is required");
                String::new()
            }
            None => String::new(),
        }
    }

    /// A whole number (ids beyond 2^53 included: read as integers).
    pub fn int(&mut self, path: &[&str]) -> Option<i64> {
        match self.at(path) {
            Some(Value::Number(n)) if n.is_i64() => n.as_i64(),
            Some(Value::String(s)) if s.parse::<i64>().is_ok() => s.parse().ok(),
            Some(_) => {
                self.v.add(Self::field(path), "must be a whole number");
                None
            }
            None => {
                self.v.add(Self::field(path), "is required");
                None
            }
        }
    }

    /// A whole number above zero (a line's quantity); 0 when it is not one,
    /// with one violation saying why.
    pub fn positive(&mut self, path: &[&str]) -> i64 {
        match self.int(path) {
            Some(n) if n > 0 => n,
            Some(_) => {
                self.v.add(Self::field(path), "must be positive");
                0
            }
            None => 0,
        }
    }

    /// An amount in minor units of `currency`.
    pub fn money(&mut self, path: &[&str], currency: &str) -> Option<i64> {
        let text = match self.at(path)? {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => {
                self.v.add(Self::field(path), "must be a decimal amount");
                return None;
            }
        };
        match money::to_minor(&text, currency) {
            Ok(m) => Some(m),
            Err(e) => {
                self.v.add(Self::field(path), e);
                None
            }
        }
    }

    /// Takes the violations `of` a part of the document (a line), their
    /// paths put under `at` (`line_items[0]`).
    pub fn take(&mut self, of: Violations, at: &str) {
        for v in of.0 {
            let field = v.field.replacen("body.", &format!("body.{at}."), 1);
            self.v.add(field, v.description);
        }
    }

    /// `amount`, or 0 and a violation of `body.{at}` when it did not fit
    /// an amount ([`sum`], [`subtotal`]).
    pub fn fits(&mut self, amount: Option<i64>, at: &str) -> i64 {
        amount.unwrap_or_else(|| {
            self.v
                .add(format!("body.{at}"), "adds up to more than an amount holds");
            0
        })
    }

    /// The sum of the amount at `field` of each entry of the list at
    /// `list` that `keep` keeps (tax lines, discount allocations, proceeds
    /// of a kind); 0 and a violation of the list when it does not fit an
    /// amount. An entry without an amount adds nothing; a malformed one is
    /// a violation on its path (`tax_lines[1].price`), where before it
    /// added nothing too, and the order was taken short of that tax.
    pub fn sum_of(
        &mut self,
        list: &[&str],
        field: &[&str],
        currency: &str,
        keep: impl Fn(&Value) -> bool,
    ) -> i64 {
        let at = list.join(".");
        let mut amounts = vec![];
        for (i, e) in self.array(list).into_iter().enumerate() {
            if !keep(e) {
                continue;
            }
            let mut entry = Reader::new(e);
            amounts.extend(entry.money(field, currency));
            self.take(entry.v, &format!("{at}[{i}]"));
        }
        self.fits(sum(amounts), &at)
    }

    /// The street lines of an address: the fields named `keys` that are
    /// not blank, trimmed.
    pub fn street(&mut self, keys: &[&str]) -> Vec<String> {
        keys.iter()
            .map(|k| self.string(&[k], false).trim().to_owned())
            .filter(|l| !l.is_empty())
            .collect()
    }

    pub fn array(&mut self, path: &[&str]) -> Vec<&'a Value> {
        match self.at(path) {
            Some(Value::Array(a)) => a.iter().collect(),
            Some(_) => {
                self.v.add(Self::field(path), "must be a list");
                vec![]
            }
            None => vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Reader;
    use serde_json::json;

    /// One violation per bad quantity, saying why (a missing one was also
    /// "must be positive" before).
    #[test]
    fn a_quantity_is_a_whole_number_above_zero() {
        let doc = json!({"a": 2, "b": "3", "c": 0, "d": -1, "e": 1.5});
        let mut r = Reader::new(&doc);
        let got: Vec<i64> = ["a", "b", "c", "d", "e", "f"]
            .iter()
            .map(|f| r.positive(&[f]))
            .collect();
        assert_eq!(got, [2, 3, 0, 0, 0, 0]);
        let said: Vec<(&str, &str)> =
            r.v.0
                .iter()
                .map(|v| (v.field.as_str(), v.description.as_str()))
                .collect();
        assert_eq!(
            said,
            [
                ("body.c", "must be positive"),
                ("body.d", "must be positive"),
                ("body.e", "must be a whole number"),
                ("body.f", "is required")
            ]
        );
    }
}
