//! Mercado Libre orders. Mercado Libre notifies a connector that an order
//! changed (topic `orders_v2`); the connector fetches it and submits
//! `{"order": <GET /orders/{id}>, "shipment": <GET /shipments/{shipping.id}>}`
//! (the shipment holds the buyer's address; `destination.shipping_address`
//! as `x-format-new: true` gives it, or the older `receiver_address`). The
//! order alone is taken too, for an order without shipping. Not signed:
//! the connector's bearer token authenticates it.
use super::{Mapped, Reader};
use oms_kernel::Violations;
use oms_proto::common::{GeoPoint, PostalAddress};
use oms_proto::orders::{Customer, Order, OrderLine, OrderTotals};
use serde_json::Value;

pub fn map(body: &Value) -> Result<Mapped, Violations> {
    // The order alone, or with its shipment.
    let (doc, prefix) = match body.get("order") {
        Some(order) => (order, "body.order."),
        None => (body, "body."),
    };
    let mut r = Reader::new(doc);
    let id = r.string(&["id"], true);
    let currency = r.string(&["currency_id"], true).to_uppercase();
    let money = super::in_currency(&currency);
    let mut lines = Vec::new();
    for (i, entry) in r.array(&["order_items"]).into_iter().enumerate() {
        let mut li = Reader::new(entry);
        let item = li.string(&["item", "id"], true);
        let variation = li.string(&["item", "variation_id"], false);
        // One listing (and variation) per line of an order.
        let line_id = match variation.is_empty() {
            true => item.clone(),
            false => format!("{item}-{variation}"),
        };
        // The seller's SKU, else the listing (and variation): map it.
        let sku = [
            li.string(&["item", "seller_sku"], false),
            li.string(&["item", "seller_custom_field"], false),
        ]
        .into_iter()
        .find(|s| !s.trim().is_empty())
        .unwrap_or_else(|| line_id.clone());
        let quantity = li.positive(&["quantity"]);
        let price = li.money(&["unit_price"], &currency);
        let title = li.string(&["item", "title"], false);
        r.take(li.v, &format!("order_items[{i}]"));
        lines.push(OrderLine {
            line_id,
            sku: sku.clone(),
            channel_sku: sku,
            title,
            quantity,
            unit_price: money(price),
            ..Default::default()
        });
    }
    if lines.is_empty() {
        r.v.add("body.order_items", "at least one order item is required");
    }
    // The buyer's name, else the nickname (names are not always given).
    let names = [
        r.string(&["buyer", "first_name"], false),
        r.string(&["buyer", "last_name"], false),
    ];
    let name = match names.join(" ").trim() {
        "" => r.string(&["buyer", "nickname"], false),
        name => name.to_owned(),
    };
    let customer = Customer {
        customer_id: r.string(&["buyer", "id"], false),
        name,
        email: r.string(&["buyer", "email"], false),
        ..Default::default()
    };
    let status = r.string(&["status"], false);
    // Mercado Libre's order statuses: not paid yet, or not to be shipped.
    let awaiting_payment = super::unpaid(
        "Mercado Libre",
        &status,
        &[
            "confirmed",
            "payment_required",
            "payment_in_process",
            "partially_paid",
        ],
    );
    let cancelled = matches!(status.as_str(), "cancelled" | "invalid" | "pending_cancel");
    let total = r.money(&["total_amount"], &currency);
    let order_time = super::super::time::parse_rfc3339(&r.string(&["date_created"], false));
    let subtotal = r.fits(super::subtotal(&lines), "order_items");
    let ship_to = body.get("shipment").map(ship_to);
    let order = Order {
        channel_order_id: id,
        currency_code: currency.clone(),
        lines,
        customer: Some(customer),
        ship_to,
        totals: Some(OrderTotals {
            subtotal: money(Some(subtotal)),
            total: money(total),
            ..Default::default()
        }),
        order_time,
        ..Default::default()
    };
    let mut v = Violations::new();
    for x in r.v.0 {
        v.add(x.field.replacen("body.", prefix, 1), x.description);
    }
    v.into_result(Mapped {
        order,
        cancelled,
        awaiting_payment,
        ..Default::default()
    })
}

/// The buyer's address from a shipment: `destination` (with the receiver
/// beside the address) or the older `receiver_address` (with it inside).
fn ship_to(shipment: &Value) -> PostalAddress {
    let (address, receiver) = match shipment.get("destination") {
        Some(d) => (d.get("shipping_address").unwrap_or(&Value::Null), d),
        None => {
            let a = shipment.get("receiver_address").unwrap_or(&Value::Null);
            (a, a)
        }
    };
    let mut a = Reader::new(address);
    let mut who = Reader::new(receiver);
    // A state id is the country's code and the state's ("BR-SP").
    let state = a.string(&["state", "id"], false);
    let region = state
        .split_once('-')
        .map_or(state.as_str(), |(_, s)| s)
        .to_owned();
    let geo = match (
        a.at(&["latitude"]).and_then(Value::as_f64),
        a.at(&["longitude"]).and_then(Value::as_f64),
    ) {
        // 0, 0 is how Mercado Libre says it has no coordinates.
        (Some(latitude), Some(longitude)) if (latitude, longitude) != (0.0, 0.0) => {
            Some(GeoPoint {
                latitude,
                longitude,
            })
        }
        _ => None,
    };
    PostalAddress {
        name: who.string(&["receiver_name"], false),
        lines: a.street(&["address_line", "comment"]),
        city: a.string(&["city", "name"], false),
        region,
        postal_code: a.string(&["zip_code"], false),
        country_code: a.string(&["country", "id"], false),
        phone: who.string(&["receiver_phone"], false),
        geo,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn order(status: &str) -> Value {
        json!({
            "id": 2000003508419013_i64,
            "status": status,
            "date_created": "2013-05-27T10:01:50.000-04:00",
            "order_items": [
                {"item": {"id": "MLB1", "title": "A", "variation_id": 77, "seller_sku": "SKU-A"},
                 "quantity": 2, "unit_price": 12.5, "currency_id": "BRL"},
                {"item": {"id": "MLB2", "title": "B", "variation_id": null},
                 "quantity": 1, "unit_price": 10, "currency_id": "BRL"}
            ],
            "total_amount": 35,
            "currency_id": "BRL",
            "buyer": {"id": 9, "nickname": "COMPRADOR"}
        })
    }

    #[test]
    fn lines_are_by_listing_and_the_seller_sku_when_there_is_one() {
        let m = map(&order("paid")).unwrap();
        let lines: Vec<(&str, &str, i64, i64)> = m
            .order
            .lines
            .iter()
            .map(|l| {
                let price = l.unit_price.as_ref().unwrap().amount_minor;
                (l.line_id.as_str(), l.sku.as_str(), l.quantity, price)
            })
            .collect();
        assert_eq!(
            lines,
            [("MLB1-77", "SKU-A", 2, 1250), ("MLB2", "MLB2", 1, 1000)]
        );
        assert_eq!(m.order.customer.unwrap().name, "COMPRADOR", "the nickname");
        assert!(m.order.ship_to.is_none() && !m.cancelled && m.awaiting_payment.is_none());
    }

    #[test]
    fn statuses_that_must_not_ship() {
        for status in ["cancelled", "invalid", "pending_cancel"] {
            assert!(map(&order(status)).unwrap().cancelled, "{status}");
        }
        for status in [
            "confirmed",
            "payment_required",
            "payment_in_process",
            "partially_paid",
        ] {
            assert!(
                map(&order(status)).unwrap().awaiting_payment.is_some(),
                "{status}"
            );
        }
    }

    #[test]
    fn the_older_receiver_address_is_read_too() {
        let shipment = json!({"receiver_address": {
            "receiver_name": "Ana", "receiver_phone": "11 5555", "address_line": "Rua A 1",
            "comment": "", "zip_code": "01000", "city": {"name": "São Paulo"},
            "state": {"id": "BR-SP"}, "country": {"id": "BR"}, "latitude": 0, "longitude": 0
        }});
        let a = ship_to(&shipment);
        assert_eq!(
            (
                a.name.as_str(),
                a.phone.as_str(),
                a.region.as_str(),
                a.lines.len()
            ),
            ("Ana", "11 5555", "SP", 1)
        );
        assert!(a.geo.is_none(), "0, 0 is no coordinates");
    }

    #[test]
    fn bad_items_are_named_by_their_path_under_order() {
        let mut body = json!({"order": order("paid")});
        body["order"]["order_items"][1]["quantity"] = 0.into();
        let v = map(&body).unwrap_err();
        assert_eq!(v.0[0].field, "body.order.order_items[1].quantity");
    }
}
