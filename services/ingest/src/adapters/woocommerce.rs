//! WooCommerce order webhook: the REST v3 order JSON, signed with
//! `X-WC-Webhook-Signature` = base64(HMAC-SHA256(secret, body)).
use super::{Mapped, Reader};
use oms_kernel::Violations;
use oms_proto::common::PostalAddress;
use oms_proto::orders::{Customer, Order, OrderLine, OrderTotals};
use serde_json::Value;

pub const SIGNATURE_HEADER: &str = "x-wc-webhook-signature";

pub fn map(body: &Value) -> Result<Mapped, Violations> {
    let mut r = Reader::new(body);
    let id = r.int(&["id"]);
    let currency = r.string(&["currency"], true).to_uppercase();
    let money = super::in_currency(&currency);
    let mut lines = Vec::new();
    for (i, item) in r.array(&["line_items"]).into_iter().enumerate() {
        let mut li = Reader::new(item);
        let sku = li.string(&["sku"], false);
        let product = li.string(&["product_id"], false);
        let variation = li.string(&["variation_id"], false);
        let quantity = li.positive(&["quantity"]);
        let subtotal = li.money(&["subtotal"], &currency).unwrap_or(0);
        let total = li.money(&["total"], &currency).unwrap_or(0);
        let tax = li.money(&["total_tax"], &currency);
        let discount = li.fits(subtotal.checked_sub(total), "total");
        // Products without a SKU are known by product (and variation) id.
        let channel_sku = if !sku.is_empty() {
            sku
        } else if variation != "0" && !variation.is_empty() {
            format!("woo-{product}-{variation}")
        } else {
            format!("woo-{product}")
        };
        r.take(li.v, &format!("line_items[{i}]"));
        lines.push(OrderLine {
            line_id: item
                .get("id")
                .map(|v| v.to_string())
                .unwrap_or_else(|| (i + 1).to_string()),
            sku: channel_sku.clone(),
            channel_sku,
            title: item
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            quantity,
            unit_price: money((quantity > 0).then(|| subtotal / quantity)),
            discount: money(Some(discount)),
            tax: money(tax),
            ..Default::default()
        });
    }
    if lines.is_empty() {
        r.v.add("body.line_items", "at least one line item is required");
    }
    let ship_to = r.at(&["shipping"]).map(|a| {
        let mut ar = Reader::new(a);
        PostalAddress {
            name: [
                ar.string(&["first_name"], false),
                ar.string(&["last_name"], false),
            ]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" "),
            company: ar.string(&["company"], false),
            lines: ar.street(&["address_1", "address_2"]),
            city: ar.string(&["city"], false),
            region: ar.string(&["state"], false),
            postal_code: ar.string(&["postcode"], false),
            country_code: ar.string(&["country"], false),
            ..Default::default()
        }
    });
    let shipping = r.money(&["shipping_total"], &currency);
    let tax = r.money(&["total_tax"], &currency);
    let discount = r.money(&["discount_total"], &currency);
    let total = r.money(&["total"], &currency);
    let subtotal = r.fits(super::subtotal(&lines), "line_items");
    let customer = Customer {
        customer_id: r.string(&["customer_id"], false),
        name: [
            r.string(&["billing", "first_name"], false),
            r.string(&["billing", "last_name"], false),
        ]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" "),
        email: r.string(&["billing", "email"], false),
        phone: r.string(&["billing", "phone"], false),
    };
    let created = r.string(&["date_created_gmt"], false);
    let order_time = super::super::time::parse_rfc3339(&format!("{created}Z"));
    // Pending payment, on hold (awaiting a transfer) and failed payments
    // are not paid; refunded in full is as cancelled.
    let status = r.string(&["status"], false);
    let cancelled = matches!(status.as_str(), "cancelled" | "refunded");
    let awaiting_payment = super::unpaid("WooCommerce", &status, &["pending", "on-hold", "failed"]);
    let order = Order {
        channel_order_id: id.map(|i| i.to_string()).unwrap_or_default(),
        currency_code: currency.clone(),
        lines,
        customer: Some(customer),
        ship_to,
        totals: Some(OrderTotals {
            subtotal: money(Some(subtotal)),
            shipping: money(shipping),
            tax: money(tax),
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
