use chrono::{DateTime, Utc};
use oms_kernel::Violations;
use oms_proto::common::{DeliveryMethod, Money, PostalAddress, ServiceLevel};
use oms_proto::orders::{Order, OrderLine, OrderTotals};
use oms_runtime::time::from_timestamp;
use std::collections::HashSet;

const MAX_LINES: usize = 1000;
const MAX_QUANTITY: i64 = 1_000_000;
const MAX_ATTRIBUTES: usize = 50;

/// A validated, normalised order ready to store: line ids assigned, the
/// delivery method defaulted, totals derived when the channel sent none.
/// Server-owned fields (name, id, state, times) are not set yet.
#[derive(Debug, Clone)]
pub struct NewOrder {
    pub order: Order,
    pub order_time: Option<DateTime<Utc>>,
    pub promise_time: Option<DateTime<Utc>>,
}

/// Longest text of a customer field, as of an address field.
const MAX_TEXT: usize = oms_runtime::address::MAX_TEXT;
/// Longest line title (marketplaces allow a few hundred characters).
const MAX_TITLE: usize = 1000;

impl NewOrder {
    /// Parses the `order` of a CreateOrder request; field paths in the
    /// violations start with `order.`.
    pub fn parse(order: Option<Order>) -> Result<NewOrder, Violations> {
        let mut v = Violations::new();
        let Some(mut o) = order else {
            return Err(Violations::one("order", "is required"));
        };
        let currency = o.currency_code.clone();
        if !is_currency(&currency) {
            v.add(
                "order.currency_code",
                "must be an ISO 4217 code such as EUR or USD",
            );
        }
        if !o.channel.is_empty() {
            v.check(
                "order.channel",
                oms_kernel::parse_name(&o.channel, "channels"),
            );
        }
        if o.channel_order_id.len() > 128 {
            v.add("order.channel_order_id", "must be at most 128 characters");
        }

        if o.lines.is_empty() {
            v.add("order.lines", "at least one line is required");
        }
        if o.lines.len() > MAX_LINES {
            v.add("order.lines", format!("at most {MAX_LINES} lines"));
        }
        let mut seen = HashSet::new();
        for (i, line) in o.lines.iter_mut().enumerate() {
            let f = |name: &str| format!("order.lines[{i}].{name}");
            if line.line_id.is_empty() {
                line.line_id = (i + 1).to_string();
            }
            if line.line_id.len() > 64 {
                v.add(f("line_id"), "must be at most 64 characters");
            }
            if !seen.insert(line.line_id.clone()) {
                v.add(f("line_id"), format!("{:?} appears twice", line.line_id));
            }
            // As inventory holds items: an order it could never place is
            // refused here, not put on hold after.
            v.check(f("sku"), oms_kernel::check_sku(&line.sku));
            v.at_most(f("channel_sku"), &line.channel_sku, 255);
            v.at_most(f("title"), &line.title, MAX_TITLE);
            if line.quantity <= 0 {
                v.add(f("quantity"), "must be positive");
            } else if line.quantity > MAX_QUANTITY {
                v.add(f("quantity"), format!("must be at most {MAX_QUANTITY}"));
            }
            check_money(
                &mut v,
                &f("unit_price"),
                line.unit_price.as_ref(),
                &currency,
                false,
            );
            check_money(
                &mut v,
                &f("discount"),
                line.discount.as_ref(),
                &currency,
                false,
            );
            check_money(&mut v, &f("tax"), line.tax.as_ref(), &currency, false);
            // Output-only counters start at zero whatever the caller sent.
            line.quantity_cancelled = 0;
            line.quantity_backordered = 0;
            line.quantity_shipped = 0;
            line.quantity_delivered = 0;
            line.sourcing.clear();
        }

        let method = DeliveryMethod::try_from(o.delivery_method).ok();
        match method {
            None => v.add("order.delivery_method", "unknown delivery method"),
            Some(DeliveryMethod::Unspecified) => o.delivery_method = DeliveryMethod::Ship as i32,
            Some(_) => {}
        }
        if o.delivery_method == DeliveryMethod::Ship as i32 {
            match &o.ship_to {
                None => v.add("order.ship_to", "is required for ship orders"),
                Some(a) => check_address(&mut v, "order.ship_to", a),
            }
        }
        if o.delivery_method == DeliveryMethod::Pickup as i32 && o.pickup_node_id.is_empty() {
            v.add("order.pickup_node_id", "is required for pickup orders");
        }
        if let Some(c) = &o.customer {
            for (name, text) in [
                ("customer_id", &c.customer_id),
                ("name", &c.name),
                ("email", &c.email),
                ("phone", &c.phone),
            ] {
                v.at_most(format!("order.customer.{name}"), text, MAX_TEXT);
            }
        }
        if ServiceLevel::try_from(o.service_level).is_err() {
            v.add("order.service_level", "unknown service level");
        }
        if o.attributes.len() > MAX_ATTRIBUTES {
            v.add(
                "order.attributes",
                format!("at most {MAX_ATTRIBUTES} attributes"),
            );
        }
        for (k, val) in &o.attributes {
            if k.is_empty() || k.len() > 64 || val.len() > 1024 {
                v.add(
                    format!("order.attributes[{k:?}]"),
                    "keys must be 1-64 characters and values at most 1024",
                );
            }
        }
        let promise_time = time(&mut v, "order.promise_time", o.promise_time.as_ref());
        let order_time = time(&mut v, "order.order_time", o.order_time.as_ref());

        match &o.totals {
            Some(t) => {
                for (name, m) in [
                    ("subtotal", &t.subtotal),
                    ("shipping", &t.shipping),
                    ("tax", &t.tax),
                    ("discount", &t.discount),
                    ("total", &t.total),
                ] {
                    check_money(
                        &mut v,
                        &format!("order.totals.{name}"),
                        m.as_ref(),
                        &currency,
                        false,
                    );
                }
            }
            None if v.is_empty() => match derive_totals(&o.lines, &currency) {
                Some(totals) => o.totals = Some(totals),
                None => v.add(
                    "order.lines",
                    "the order's totals (price × quantity, discounts, tax) exceed what an amount holds",
                ),
            },
            None => {}
        }

        // Holds to create the order with: a known type once each, a
        // reason as any hold's; who and when are the writer's.
        let mut types = HashSet::new();
        for (i, h) in o.holds.iter_mut().enumerate() {
            let f = |name: &str| format!("order.holds[{i}].{name}");
            if v.check(f("type"), super::lifecycle::hold_type(h.r#type))
                .is_some()
                && !types.insert(h.r#type)
            {
                v.add(f("type"), "an order has at most one hold of each type");
            }
            v.at_most(f("reason"), &h.reason, super::lifecycle::MAX_REASON);
            h.placed_by.clear();
            h.place_time = None;
        }

        // Server-owned fields.
        o.name.clear();
        o.order_id.clear();
        o.state = 0;
        o.create_time = None;
        o.update_time = None;
        o.version = 0;
        v.into_result(NewOrder {
            order: o,
            order_time,
            promise_time,
        })
    }
}

fn is_currency(c: &str) -> bool {
    c.len() == 3 && c.chars().all(|ch| ch.is_ascii_uppercase())
}

fn check_money(
    v: &mut Violations,
    field: &str,
    m: Option<&Money>,
    currency: &str,
    allow_negative: bool,
) {
    let Some(m) = m else { return };
    if m.currency_code != currency {
        v.add(
            format!("{field}.currency_code"),
            format!("must be the order's currency {currency:?}"),
        );
    }
    if !allow_negative && m.amount_minor < 0 {
        v.add(format!("{field}.amount_minor"), "must not be negative");
    }
}

fn check_address(v: &mut Violations, field: &str, a: &PostalAddress) {
    if a.lines.iter().all(|l| l.trim().is_empty()) {
        v.add(
            format!("{field}.lines"),
            "at least one street line is required",
        );
    }
    if a.city.trim().is_empty() {
        v.add(format!("{field}.city"), "is required");
    }
    if a.country_code.is_empty() {
        v.add(format!("{field}.country_code"), "is required");
    }
    oms_runtime::address::check_form(v, field, a);
}

fn time(
    v: &mut Violations,
    field: &str,
    t: Option<&prost_types::Timestamp>,
) -> Option<DateTime<Utc>> {
    let t = t?;
    let parsed = from_timestamp(t);
    if parsed.is_none() {
        v.add(field, "is not a valid timestamp");
    }
    parsed
}

/// Totals from the lines when the channel sent none: subtotal is price ×
/// quantity, total = subtotal − discount + tax (no shipping known). None
/// when a figure does not fit an amount (summed wide, so nothing wraps).
fn derive_totals(lines: &[OrderLine], currency: &str) -> Option<OrderTotals> {
    let amount = |m: &Option<Money>| i128::from(m.as_ref().map_or(0, |m| m.amount_minor));
    let sum = |f: &dyn Fn(&OrderLine) -> i128| lines.iter().map(f).sum::<i128>();
    let subtotal = sum(&|l| amount(&l.unit_price) * i128::from(l.quantity));
    let discount = sum(&|l| amount(&l.discount));
    let tax = sum(&|l| amount(&l.tax));
    let money = |amount_minor: i128| {
        Some(Money {
            currency_code: currency.to_owned(),
            amount_minor: i64::try_from(amount_minor).ok()?,
        })
    };
    Some(OrderTotals {
        subtotal: Some(money(subtotal)?),
        shipping: money(0),
        tax: Some(money(tax)?),
        discount: Some(money(discount)?),
        total: Some(money(subtotal - discount + tax)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eur(amount_minor: i64) -> Option<Money> {
        Some(Money {
            currency_code: "EUR".into(),
            amount_minor,
        })
    }

    fn valid() -> Order {
        Order {
            currency_code: "EUR".into(),
            lines: vec![OrderLine {
                sku: "SKU-1".into(),
                quantity: 2,
                unit_price: eur(1999),
                ..Default::default()
            }],
            ship_to: Some(PostalAddress {
                lines: vec!["1 Main St".into()],
                city: "Berlin".into(),
                country_code: "DE".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn normalises_a_valid_order() {
        let n = NewOrder::parse(Some(valid())).unwrap();
        assert_eq!(n.order.lines[0].line_id, "1");
        assert_eq!(n.order.delivery_method, DeliveryMethod::Ship as i32);
        let t = n.order.totals.unwrap();
        assert_eq!(t.subtotal.unwrap().amount_minor, 3998);
        assert_eq!(t.total.unwrap().amount_minor, 3998);
    }

    #[test]
    fn totals_beyond_an_amount_are_bad_input_not_a_panic() {
        let mut o = valid();
        o.lines[0].unit_price = eur(i64::MAX);
        o.lines.push(o.lines[0].clone());
        o.lines[1].line_id = "2".into();
        let fields: Vec<String> = NewOrder::parse(Some(o))
            .unwrap_err()
            .0
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(fields, ["order.lines"]);
    }

    #[test]
    fn reports_every_bad_field() {
        let mut o = valid();
        o.currency_code = "eur".into();
        o.lines[0].quantity = 0;
        o.lines.push(OrderLine {
            line_id: "1".into(),
            sku: "".into(),
            quantity: 1,
            ..Default::default()
        });
        o.ship_to = None;
        let err = NewOrder::parse(Some(o)).unwrap_err();
        let fields: Vec<_> = err.0.iter().map(|v| v.field.as_str()).collect();
        for f in [
            "order.currency_code",
            "order.lines[0].quantity",
            "order.lines[1].line_id",
            "order.lines[1].sku",
            "order.ship_to",
        ] {
            assert!(fields.contains(&f), "{f} missing from {fields:?}");
        }
    }

    #[test]
    fn a_sku_no_item_can_have_is_refused() {
        for bad in ["a b", "a/b", &"S".repeat(65)] {
            let mut o = valid();
            o.lines[0].sku = bad.into();
            let err = NewOrder::parse(Some(o)).unwrap_err();
            let fields: Vec<_> = err.0.iter().map(|v| v.field.as_str()).collect();
            assert_eq!(fields, ["order.lines[0].sku"], "{bad}");
        }
    }

    #[test]
    fn free_text_is_bounded() {
        let long = "x".repeat(501);
        let mut o = valid();
        o.lines[0].title = "t".repeat(1001);
        o.lines[0].channel_sku = "c".repeat(256);
        let a = o.ship_to.as_mut().unwrap();
        a.lines = vec!["1 Main St".into(); 11];
        a.lines[1] = long.clone();
        a.postal_code = long.clone();
        o.customer = Some(oms_proto::orders::Customer {
            email: long.clone(),
            ..Default::default()
        });
        let err = NewOrder::parse(Some(o)).unwrap_err();
        let fields: Vec<_> = err.0.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "order.lines[0].channel_sku",
                "order.lines[0].title",
                "order.ship_to.lines",
                "order.ship_to.lines[1]",
                "order.ship_to.postal_code",
                "order.customer.email",
            ]
        );
        // As long as allowed is accepted.
        let mut o = valid();
        o.lines[0].title = "t".repeat(1000);
        o.ship_to.as_mut().unwrap().city = "x".repeat(500);
        assert!(NewOrder::parse(Some(o)).is_ok());
    }

    #[test]
    fn pickup_needs_a_store_not_an_address() {
        let mut o = valid();
        o.ship_to = None;
        o.delivery_method = DeliveryMethod::Pickup as i32;
        let err = NewOrder::parse(Some(o.clone())).unwrap_err();
        assert_eq!(err.0[0].field, "order.pickup_node_id");
        o.pickup_node_id = "STORE-1".into();
        assert!(NewOrder::parse(Some(o)).is_ok());
    }

    #[test]
    fn money_must_match_the_order_currency() {
        let mut o = valid();
        o.lines[0].unit_price = Some(Money {
            currency_code: "USD".into(),
            amount_minor: 5,
        });
        let err = NewOrder::parse(Some(o)).unwrap_err();
        assert_eq!(err.0[0].field, "order.lines[0].unit_price.currency_code");
    }
}
