//! Shopify order webhook (`orders/create`, `orders/updated`,
//! `orders/cancelled`): the REST order JSON, signed with
//! `X-Shopify-Hmac-Sha256` = base64(HMAC-SHA256(secret, body)).
use super::{Mapped, Reader};
use oms_kernel::Violations;
use oms_proto::common::{GeoPoint, PostalAddress};
use oms_proto::orders::{Customer, Order, OrderLine, OrderTotals};
use serde_json::Value;

pub const SIGNATURE_HEADER: &str = "x-shopify-hmac-sha256";

pub fn map(body: &Value) -> Result<Mapped, Violations> {
    // Webhooks send the order itself; the REST API wraps it in "order".
    let doc = body.get("order").unwrap_or(body);
    let mut r = Reader::new(doc);
    let id = r.int(&["id"]);
    let currency = r.string(&["currency"], true).to_uppercase();
    let money = super::in_currency(&currency);
    // Lines as ordered, and what is left of each after refunds and order
    // edits (`current_quantity`, API 2023-01 on; older payloads have only
    // what was ordered).
    let mut ordered = Vec::new();
    let mut left = Vec::new();
    let items = r.array(&["line_items"]);
    let some_items = !items.is_empty();
    for (i, item) in items.into_iter().enumerate() {
        // A digital good or gift card: nothing for a warehouse to ship.
        if item.get("requires_shipping").and_then(Value::as_bool) == Some(false) {
            continue;
        }
        let mut li = Reader::new(item);
        let idx = i.to_string();
        let sku = li.string(&["sku"], false);
        let variant = li.string(&["variant_id"], false);
        let quantity = li.positive(&["quantity"]);
        let current = match li.at(&["current_quantity"]) {
            Some(_) => li.int(&["current_quantity"]).unwrap_or(0),
            None => quantity,
        };
        let price = li.money(&["price"], &currency);
        // Discounts allocated to the line (`total_discount` is their
        // deprecated sum, 0.00 in current payloads).
        let allocations = ["discount_allocations"];
        let discount = match li.array(&allocations).is_empty() {
            true => li.money(&["total_discount"], &currency),
            false => Some(li.sum_of(&allocations, &["amount"], &currency, |_| true)),
        };
        let tax = li.sum_of(&["tax_lines"], &["price"], &currency, |_| true);
        if quantity > 0 && !(0..=quantity).contains(&current) {
            li.v.add("body.current_quantity", "must be 0 to quantity");
        }
        let channel_sku = if sku.is_empty() { variant } else { sku };
        if channel_sku.is_empty() {
            li.v.add("body.sku", "a line needs a sku or a variant_id");
        }
        r.take(li.v, &format!("line_items[{idx}]"));
        let line = OrderLine {
            line_id: li_id(item, i),
            sku: channel_sku.clone(),
            channel_sku,
            title: item
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            quantity,
            unit_price: money(price),
            discount: money(discount),
            tax: money(Some(tax)),
            ..Default::default()
        };
        left.push((line.line_id.clone(), current));
        ordered.push(line);
    }
    if !some_items {
        r.v.add("body.line_items", "at least one line item is required");
    } else if ordered.is_empty() {
        r.v.add(
            "body.line_items",
            "no line item requires shipping (gift cards, digital goods): nothing to fulfil",
        );
    }
    // The order is what is left: lines refunded or edited away in full are
    // not shipped; with nothing left at all, it is the order as placed,
    // cancelled.
    // (A line's discount and tax are for the units ordered.)
    let (lines, nothing_left) = super::what_is_left(ordered, &left, true);
    let ship_to = r.at(&["shipping_address"]).map(|a| {
        let mut ar = Reader::new(a);
        let geo = match (
            ar.string(&["latitude"], false).parse::<f64>(),
            ar.string(&["longitude"], false).parse::<f64>(),
        ) {
            (Ok(latitude), Ok(longitude)) => Some(GeoPoint {
                latitude,
                longitude,
            }),
            _ => None,
        };
        PostalAddress {
            name: ar.string(&["name"], false),
            company: ar.string(&["company"], false),
            lines: ar.street(&["address1", "address2"]),
            city: ar.string(&["city"], false),
            region: ar.string(&["province_code"], false),
            postal_code: ar.string(&["zip"], false),
            country_code: ar.string(&["country_code"], false),
            phone: ar.string(&["phone"], false),
            email: String::new(),
            geo,
        }
    });
    // Shipping lines removed by an order edit are not charged.
    let removed = |s: &Value| s.get("is_removed").and_then(Value::as_bool) == Some(true);
    let shipping = r.sum_of(&["shipping_lines"], &["price"], &currency, |s| !removed(s));
    // Totals of what is left (`current_*`) when the payload has them.
    let mut amount = |name: &str| {
        let current = format!("current_{name}");
        let name = if !nothing_left && r.at(&[current.as_str()]).is_some() {
            current.as_str()
        } else {
            name
        };
        money(r.money(&[name], &currency))
    };
    let totals = OrderTotals {
        subtotal: amount("subtotal_price"),
        shipping: money(Some(shipping)),
        tax: amount("total_tax"),
        discount: amount("total_discounts"),
        total: amount("total_price"),
    };
    let customer = Customer {
        customer_id: r
            .at(&["customer", "id"])
            .map(|v| v.to_string())
            .unwrap_or_default(),
        name: [
            r.string(&["customer", "first_name"], false),
            r.string(&["customer", "last_name"], false),
        ]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" "),
        email: r.string(&["email"], false),
        phone: r.string(&["phone"], false),
    };
    let order_time = super::super::time::parse_rfc3339(&r.string(&["created_at"], false));
    let cancelled = r.at(&["cancelled_at"]).is_some() || nothing_left;
    // Pending: a manual payment (bank deposit, money order) not received
    // yet. Cash on delivery is pending too, and is paid at the door.
    let cash_on_delivery = r
        .array(&["payment_gateway_names"])
        .iter()
        .filter_map(|g| g.as_str())
        .any(|g| g.to_ascii_lowercase().contains("cash on delivery"));
    let financial = r.string(&["financial_status"], false);
    let awaiting_payment =
        super::unpaid("Shopify", &financial, &["pending"]).filter(|_| !cash_on_delivery);
    let order = Order {
        channel_order_id: id.map(|i| i.to_string()).unwrap_or_default(),
        currency_code: currency.clone(),
        lines,
        customer: Some(customer),
        ship_to,
        totals: Some(totals),
        order_time,
        attributes: [("channel_order_name".to_owned(), r.string(&["name"], false))]
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .collect(),
        ..Default::default()
    };
    r.v.into_result(Mapped {
        order,
        cancelled,
        left,
        awaiting_payment,
    })
}

fn li_id(item: &Value, i: usize) -> String {
    item.get("id")
        .map(|v| v.to_string())
        .unwrap_or_else(|| (i + 1).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn order(financial_status: &str, gateways: &[&str]) -> Value {
        json!({
            "id": 1,
            "currency": "EUR",
            "financial_status": financial_status,
            "payment_gateway_names": gateways,
            "line_items": [
                {"id": 11, "sku": "A", "quantity": 4, "current_quantity": 1, "price": "5.00",
                 "total_discount": "2.00", "tax_lines": [{"price": "3.80"}]},
                {"id": 12, "sku": "B", "quantity": 1, "current_quantity": 0, "price": "9.00",
                 "total_discount": "0.00", "discount_allocations": [{"amount": "0.50"}, {"amount": "0.25"}]}
            ]
        })
    }

    #[test]
    fn what_is_left_of_each_line_is_the_order() {
        let m = map(&order("partially_refunded", &[])).unwrap();
        let lines: Vec<(&str, i64)> = m
            .order
            .lines
            .iter()
            .map(|l| (l.sku.as_str(), l.quantity))
            .collect();
        assert_eq!(lines, [("A", 1)]);
        let a = &m.order.lines[0];
        let amount = |x: &Option<oms_proto::common::Money>| x.as_ref().unwrap().amount_minor;
        assert_eq!((amount(&a.discount), amount(&a.tax)), (50, 95), "a quarter");
        assert_eq!(m.left, [("11".to_string(), 1), ("12".to_string(), 0)]);
        assert!(!m.cancelled && m.awaiting_payment.is_none());
    }

    #[test]
    fn a_pending_payment_awaits_unless_paid_at_the_door() {
        let m = map(&order("pending", &["bank_deposit"])).unwrap();
        let why = m.awaiting_payment.unwrap();
        assert_eq!(why, "awaiting payment in Shopify (status pending)");
        let m = map(&order("pending", &["Cash on Delivery (COD)"])).unwrap();
        assert!(m.awaiting_payment.is_none());
        let m = map(&order("authorized", &[])).unwrap();
        assert!(m.awaiting_payment.is_none());
    }

    #[test]
    fn lines_that_need_no_shipping_are_not_on_the_order() {
        let mut body = order("paid", &[]);
        body["line_items"][0]["requires_shipping"] = false.into();
        body["line_items"][1]["current_quantity"] = 1.into();
        let m = map(&body).unwrap();
        let skus: Vec<&str> = m.order.lines.iter().map(|l| l.sku.as_str()).collect();
        assert_eq!(skus, ["B"]);
        let discount = m.order.lines[0].discount.as_ref().unwrap().amount_minor;
        assert_eq!(discount, 75, "its discount allocations");
        assert_eq!(m.left, [("12".to_string(), 1)]);
        body["line_items"][1]["requires_shipping"] = false.into();
        let v = map(&body).unwrap_err();
        assert_eq!(v.0[0].field, "body.line_items");
        assert!(
            v.0[0]
                .description
                .contains("no line item requires shipping")
        );
    }

    #[test]
    fn amounts_that_add_up_beyond_an_amount_are_refused_on_their_path() {
        let mut body = order("paid", &[]);
        let huge = json!({"price": "92233720368547758.00"});
        body["line_items"][0]["tax_lines"] = json!([huge, huge]);
        body["shipping_lines"] = json!([huge, huge]);
        let v = map(&body).unwrap_err();
        let fields: Vec<&str> = v.0.iter().map(|x| x.field.as_str()).collect();
        assert_eq!(
            fields,
            ["body.line_items[0].tax_lines", "body.shipping_lines"]
        );
    }

    #[test]
    fn a_malformed_amount_in_a_list_is_refused_on_its_path() {
        let mut body = order("paid", &[]);
        body["line_items"][0]["tax_lines"] = json!([{"price": "3.80"}, {"price": "3,80"}]);
        body["shipping_lines"] = json!([{"price": "4.90"}, {"price": true}]);
        let v = map(&body).unwrap_err();
        let fields: Vec<&str> = v.0.iter().map(|x| x.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "body.line_items[0].tax_lines[1].price",
                "body.shipping_lines[1].price"
            ]
        );
    }

    #[test]
    fn a_line_of_no_units_with_some_left_is_refused_not_divided_by() {
        let mut body = order("paid", &[]);
        body["line_items"][0]["quantity"] = 0.into();
        let v = map(&body).unwrap_err();
        assert_eq!(v.0[0].field, "body.line_items[0].quantity");
    }

    #[test]
    fn more_left_than_ordered_is_refused_on_its_path() {
        let mut body = order("paid", &[]);
        body["line_items"][1]["current_quantity"] = 2.into();
        let v = map(&body).unwrap_err();
        assert_eq!(v.0[0].field, "body.line_items[1].current_quantity");
    }
}
