//! Trendyol shipment packages (`GET /suppliers/{id}/orders`): one package
//! per submission (a page's `content[0]` is taken when a page is sent).
//! Trendyol is polled with API credentials, not signed webhooks; the
//! connector's bearer token authenticates the submission.
use super::{Mapped, Reader};
use oms_kernel::Violations;
use oms_proto::common::PostalAddress;
use oms_proto::orders::{Customer, Order, OrderLine, OrderTotals};
use serde_json::Value;

pub fn map(body: &Value) -> Result<Mapped, Violations> {
    let package = body.get("content").and_then(|c| c.get(0)).unwrap_or(body);
    let mut r = Reader::new(package);
    let id = r.string(&["orderNumber"], true);
    let currency = r.string(&["currencyCode"], true).to_uppercase();
    let money = super::in_currency(&currency);
    let mut lines = Vec::new();
    for (i, item) in r.array(&["lines"]).into_iter().enumerate() {
        let mut li = Reader::new(item);
        let merchant_sku = li.string(&["merchantSku"], false);
        let sku = if merchant_sku.is_empty() {
            li.string(&["sku"], true)
        } else {
            merchant_sku
        };
        let quantity = li.positive(&["quantity"]);
        let price = li.money(&["price"], &currency);
        let discount = li.money(&["discount"], &currency);
        let line_id = li.string(&["id"], false);
        let title = li.string(&["productName"], false);
        r.take(li.v, &format!("lines[{i}]"));
        lines.push(OrderLine {
            line_id,
            sku: sku.clone(),
            channel_sku: sku,
            title,
            quantity,
            unit_price: money(price),
            discount: money(discount),
            ..Default::default()
        });
    }
    if lines.is_empty() {
        r.v.add("body.lines", "at least one line is required");
    }
    let ship_to = r.at(&["shipmentAddress"]).map(|a| {
        let mut ar = Reader::new(a);
        PostalAddress {
            name: ar.string(&["fullName"], false).trim().to_owned(),
            company: ar.string(&["company"], false),
            lines: ar.street(&["address1", "address2", "district"]),
            city: ar.string(&["city"], false).trim().to_owned(),
            postal_code: ar.string(&["postalCode"], false),
            country_code: ar.string(&["countryCode"], false),
            phone: ar.string(&["phone"], false),
            ..Default::default()
        }
    });
    let gross = r.money(&["grossAmount"], &currency);
    let discount = r.money(&["totalDiscount"], &currency);
    let total = r.money(&["totalPrice"], &currency);
    let customer = Customer {
        customer_id: r.string(&["customerId"], false),
        name: format!(
            "{} {}",
            r.string(&["customerFirstName"], false),
            r.string(&["customerLastName"], false)
        )
        .trim()
        .to_owned(),
        email: r.string(&["customerEmail"], false),
        phone: String::new(),
    };
    // orderDate is epoch milliseconds.
    let order_time = r
        .at(&["orderDate"])
        .and_then(Value::as_i64)
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(oms_runtime::time::to_timestamp);
    let status = r.string(&["status"], false);
    let cancelled = matches!(status.as_str(), "Cancelled" | "UnSupplied");
    // A package is `Awaiting` until its payment is confirmed; Trendyol
    // says to do nothing with it until it is `Created`.
    let awaiting_payment = super::unpaid("Trendyol", &status, &["Awaiting"]);
    let order = Order {
        channel_order_id: id,
        currency_code: currency.clone(),
        lines,
        customer: Some(customer),
        ship_to,
        totals: Some(OrderTotals {
            subtotal: money(gross),
            shipping: money(Some(0)),
            tax: money(Some(0)),
            discount: money(discount),
            total: money(total),
        }),
        order_time,
        ..Default::default()
    };
    r.v.into_result(Mapped {
        order,
        cancelled,
        awaiting_payment,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_package_awaiting_its_payment_awaits_it() {
        let package = |status: &str| {
            serde_json::json!({
                "orderNumber": "80869231", "currencyCode": "TRY", "status": status,
                "lines": [{"id": 1, "merchantSku": "A", "quantity": 1, "price": 10.5}]
            })
        };
        let m = map(&package("Awaiting")).unwrap();
        assert_eq!(
            m.awaiting_payment.as_deref(),
            Some("awaiting payment in Trendyol (status Awaiting)")
        );
        let m = map(&package("Created")).unwrap();
        assert!(m.awaiting_payment.is_none() && !m.cancelled);
        assert!(map(&package("UnSupplied")).unwrap().cancelled);
    }
}
