//! Amazon SP-API Orders API v2026-01-01: `getOrder` answers with one
//! document holding the order, its items, recipient, proceeds and
//! fulfillment (`{"order": {...}}`), where v0 needed three calls. The
//! connector submits that answer as it came (the items' fulfillment
//! counts when it asked for the `FULFILLMENT` data, which says what is
//! left of each item after cancellations).
use super::{Mapped, Reader};
use oms_kernel::Violations;
use oms_proto::common::{PostalAddress, ServiceLevel};
use oms_proto::orders::{Customer, Order, OrderLine, OrderTotals};
use serde_json::Value;

/// Whether `order` (the body's `order`) is of this version.
pub fn is_this_version(order: &Value) -> bool {
    order.get("orderId").is_some()
}

pub fn map(order: &Value) -> Result<Mapped, Violations> {
    let mut r = Reader::new(order);
    let id = r.string(&["orderId"], true);
    let currency = r
        .string(&["proceeds", "grandTotal", "currencyCode"], true)
        .to_uppercase();
    let money = super::in_currency(&currency);
    let (mut lines, mut left) = (Vec::new(), Vec::new());
    for (i, item) in r.array(&["orderItems"]).into_iter().enumerate() {
        let mut li = Reader::new(item);
        let line_id = li.string(&["orderItemId"], true);
        let sku = li.string(&["product", "sellerSku"], true);
        let quantity = li.positive(&["quantityOrdered"]);
        // Shipped and still to ship: what cancellations left.
        let units = match li.at(&["fulfillment"]) {
            Some(_) => {
                let done = count(&mut li, "quantityFulfilled", quantity);
                let open = count(&mut li, "quantityUnfulfilled", quantity);
                done.saturating_add(open).min(quantity)
            }
            None => quantity,
        };
        let title = li.string(&["product", "title"], false);
        let unit_price = li.money(&["product", "price", "unitPrice", "amount"], &currency);
        let tax = breakdown(&mut li, &["proceeds", "breakdowns"], "TAX", &currency);
        let discount = breakdown(&mut li, &["proceeds", "breakdowns"], "DISCOUNT", &currency);
        if sku.is_empty() && li.at(&["product", "sellerSku"]).is_some() {
            li.v.add("body.product.sellerSku", "must not be empty");
        }
        r.take(li.v, &format!("order.orderItems[{i}]"));
        left.push((line_id.clone(), units));
        lines.push(OrderLine {
            line_id,
            sku: sku.clone(),
            channel_sku: sku,
            title,
            quantity,
            unit_price: money(unit_price),
            discount: money(Some(discount.saturating_abs())),
            tax: money(Some(tax)),
            ..Default::default()
        });
    }
    if lines.is_empty() {
        r.v.add(
            "body.order.orderItems",
            "at least one order item is required",
        );
    }
    let status = r.string(&["fulfillment", "fulfillmentStatus"], false);
    // What is left ships (each item's proceeds as Amazon states them);
    // nothing left at all is the order as placed, cancelled.
    let (lines, nothing_left) = super::what_is_left(lines, &left, false);
    let cancelled = status == "CANCELLED" || nothing_left;
    // Pending orders must not ship (payment not authorized yet).
    let awaiting_payment = super::unpaid("Amazon", &status, &["PENDING", "PENDING_AVAILABILITY"]);
    let ship_to = r.at(&["recipient", "deliveryAddress"]).map(|a| {
        let mut ar = Reader::new(a);
        PostalAddress {
            name: ar.string(&["name"], false),
            company: ar.string(&["companyName"], false),
            lines: ar.street(&["addressLine1", "addressLine2", "addressLine3"]),
            city: ar.string(&["city"], false),
            region: ar.string(&["stateOrRegion"], false),
            postal_code: ar.string(&["postalCode"], false),
            country_code: ar.string(&["countryCode"], false),
            phone: ar.string(&["phone"], false),
            ..Default::default()
        }
    });
    let customer = Customer {
        name: r.string(&["buyer", "buyerName"], false),
        email: r.string(&["buyer", "buyerEmail"], false),
        ..Default::default()
    };
    let subtotal = r.fits(super::subtotal(&lines), "orderItems");
    let breakdowns = &["proceeds", "breakdowns"];
    let discount = breakdown(&mut r, breakdowns, "DISCOUNT", &currency);
    let totals = OrderTotals {
        subtotal: money(Some(subtotal)),
        shipping: money(Some(breakdown(&mut r, breakdowns, "SHIPPING", &currency))),
        tax: money(Some(breakdown(&mut r, breakdowns, "TAX", &currency))),
        discount: money(Some(discount.saturating_abs())),
        total: money(r.money(&["proceeds", "grandTotal", "amount"], &currency)),
    };
    let time =
        |r: &mut Reader, path: &[&str]| super::super::time::parse_rfc3339(&r.string(path, false));
    let order = Order {
        channel_order_id: id,
        currency_code: currency.clone(),
        lines,
        customer: Some(customer),
        ship_to,
        totals: Some(totals),
        order_time: time(&mut r, &["createdTime"]),
        promise_time: time(
            &mut r,
            &["fulfillment", "deliverByWindow", "latestDateTime"],
        ),
        service_level: service_level(&r.string(&["fulfillment", "fulfillmentServiceLevel"], false))
            as i32,
        ..Default::default()
    };
    // Paths as the body has them: under `order`.
    let mut v = Violations::new();
    for x in r.v.0 {
        let field = if x.field.starts_with("body.order.") {
            x.field
        } else {
            x.field.replacen("body.", "body.order.", 1)
        };
        v.add(field, x.description);
    }
    v.into_result(Mapped {
        order,
        cancelled,
        left,
        awaiting_payment,
    })
}

/// A count that may be absent (0).
/// An item's fulfillment count (absent: 0), at most what was ordered.
fn count(r: &mut Reader, name: &str, ordered: i64) -> i64 {
    let path = ["fulfillment", name];
    let n = match r.at(&path) {
        Some(_) => r.int(&path).unwrap_or(0),
        None => 0,
    };
    if !(0..=ordered.max(0)).contains(&n) {
        r.v.add(
            format!("body.fulfillment.{name}"),
            "must be 0 to quantityOrdered",
        );
        return 0;
    }
    n
}

/// The sum of the `kind` entries of a proceeds breakdown list.
fn breakdown(r: &mut Reader, path: &[&str], kind: &str, currency: &str) -> i64 {
    let of_kind = |b: &Value| b.get("type").and_then(Value::as_str) == Some(kind);
    r.sum_of(path, &["subtotal", "amount"], currency, of_kind)
}

/// The order's service level from Amazon's shipping speed category.
pub fn service_level(category: &str) -> ServiceLevel {
    match category.to_ascii_uppercase().as_str() {
        "STANDARD" | "FREE_ECONOMY" | "FREEECONOMY" => ServiceLevel::Standard,
        "EXPEDITED" | "SECOND_DAY" | "SECONDDAY" | "PRIORITY" => ServiceLevel::Expedited,
        "NEXT_DAY" | "NEXTDAY" => ServiceLevel::NextDay,
        "SAME_DAY" | "SAMEDAY" => ServiceLevel::SameDay,
        _ => ServiceLevel::Unspecified,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn item(id: &str, sku: &str, ordered: i64, fulfilled: i64, unfulfilled: i64) -> Value {
        json!({
            "orderItemId": id,
            "quantityOrdered": ordered,
            "product": {"sellerSku": sku, "price": {"unitPrice": {"amount": "10.00", "currencyCode": "EUR"}}},
            "proceeds": {"breakdowns": [
                {"type": "ITEM", "subtotal": {"amount": "20.00", "currencyCode": "EUR"}},
                {"type": "TAX", "subtotal": {"amount": "3.80", "currencyCode": "EUR"}},
                {"type": "DISCOUNT", "subtotal": {"amount": "-1.00", "currencyCode": "EUR"}}
            ]},
            "fulfillment": {"quantityFulfilled": fulfilled, "quantityUnfulfilled": unfulfilled}
        })
    }

    fn order(items: Vec<Value>) -> Value {
        json!({
            "orderId": "A-1",
            "proceeds": {"grandTotal": {"amount": "28.80", "currencyCode": "EUR"}},
            "fulfillment": {"fulfillmentStatus": "UNSHIPPED", "fulfillmentServiceLevel": "NEXT_DAY"},
            "orderItems": items
        })
    }

    #[test]
    fn what_cancellations_left_of_each_item_is_the_order() {
        let m = map(&order(vec![
            item("1", "A", 2, 0, 1),
            item("2", "B", 1, 0, 0),
        ]))
        .unwrap();
        let lines: Vec<(&str, i64)> = m
            .order
            .lines
            .iter()
            .map(|l| (l.sku.as_str(), l.quantity))
            .collect();
        assert_eq!(lines, [("A", 1)], "B cancelled, one A of two");
        assert_eq!(m.left, [("1".to_string(), 1), ("2".to_string(), 0)]);
        assert!(!m.cancelled);
        let a = &m.order.lines[0];
        let amount = |x: &Option<oms_proto::common::Money>| x.as_ref().unwrap().amount_minor;
        assert_eq!((amount(&a.tax), amount(&a.discount)), (380, 100));
        assert_eq!(m.order.service_level, ServiceLevel::NextDay as i32);
    }

    #[test]
    fn fulfillment_counts_and_sums_beyond_an_amount_are_refused_on_their_path() {
        let mut bad = item("1", "A", 2, i64::MAX, i64::MAX);
        bad["product"]["price"]["unitPrice"]["amount"] = "92233720368547758.00".into();
        let v = map(&order(vec![bad])).unwrap_err();
        let fields: Vec<&str> = v.0.iter().map(|x| x.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "body.order.orderItems[0].fulfillment.quantityFulfilled",
                "body.order.orderItems[0].fulfillment.quantityUnfulfilled",
                "body.order.orderItems"
            ]
        );
    }

    #[test]
    fn an_order_with_nothing_left_comes_as_placed_and_cancelled() {
        let m = map(&order(vec![item("1", "A", 2, 0, 0)])).unwrap();
        assert!(m.cancelled);
        assert_eq!(m.order.lines[0].quantity, 2);
    }

    #[test]
    fn bad_items_are_named_by_their_path() {
        let mut bad = item("1", "", 0, 0, 0);
        bad["product"]["price"]["unitPrice"]["amount"] = "ten".into();
        let v = map(&order(vec![bad])).unwrap_err();
        let fields: Vec<&str> = v.0.iter().map(|x| x.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "body.order.orderItems[0].quantityOrdered",
                "body.order.orderItems[0].product.price.unitPrice.amount",
                "body.order.orderItems[0].product.sellerSku"
            ]
        );
    }
}
