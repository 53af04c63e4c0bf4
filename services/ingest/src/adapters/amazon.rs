//! Amazon Selling Partner API orders. A connector polls SP-API and submits
//! one body per order. With the Orders API v0, the three answers it
//! fetched: `{"order": <getOrders Orders[i]>, "items": <getOrderItems
//! payload>, "address": <getOrderAddress payload>}` (each may also be the
//! whole response with its `payload`); with v2026-01-01, the `getOrder`
//! answer as it came ([`super::amazon_2026`]). Amazon does not sign these;
//! the connector's bearer token authenticates them.
use super::{Mapped, Reader};
use oms_kernel::Violations;
use oms_proto::common::PostalAddress;
use oms_proto::orders::{Order, OrderLine, OrderTotals};
use serde_json::Value;

fn unwrap(v: Option<&Value>) -> Option<&Value> {
    v.map(|v| v.get("payload").unwrap_or(v))
}

pub fn map(body: &Value) -> Result<Mapped, Violations> {
    let mut top = Reader::new(body);
    let Some(order) = unwrap(top.at(&["order"])) else {
        return Err(Violations::one(
            "body.order",
            "is required (an order from getOrders)",
        ));
    };
    if super::amazon_2026::is_this_version(order) {
        return super::amazon_2026::map(order);
    }
    let mut r = Reader::new(order);
    let id = r.string(&["AmazonOrderId"], true);
    let currency = r
        .string(&["OrderTotal", "CurrencyCode"], true)
        .to_uppercase();
    let money = super::in_currency(&currency);
    let items_doc = unwrap(top.at(&["items"]));
    let items: Vec<&Value> = items_doc
        .and_then(|d| d.get("OrderItems"))
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    if items.is_empty() {
        top.v.add(
            "body.items.OrderItems",
            "at least one order item is required (getOrderItems)",
        );
    }
    let mut lines = Vec::new();
    let mut taxes = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let mut li = Reader::new(item);
        let sku = li.string(&["SellerSKU"], true);
        let quantity = li.positive(&["QuantityOrdered"]);
        // ItemPrice is the price of all units of the item.
        let price = li.money(&["ItemPrice", "Amount"], &currency).unwrap_or(0);
        let tax = li.money(&["ItemTax", "Amount"], &currency).unwrap_or(0);
        let discount = li
            .money(&["PromotionDiscount", "Amount"], &currency)
            .unwrap_or(0);
        let line_id = li.string(&["OrderItemId"], false);
        let title = li.string(&["Title"], false);
        top.take(li.v, &format!("items.OrderItems[{i}]"));
        taxes.push(tax);
        lines.push(OrderLine {
            line_id,
            sku: sku.clone(),
            channel_sku: sku,
            title,
            quantity,
            unit_price: money((quantity > 0).then(|| price / quantity)),
            discount: money(Some(discount)),
            tax: money(Some(tax)),
            ..Default::default()
        });
    }
    let ship_to = unwrap(top.at(&["address"]))
        .and_then(|a| a.get("ShippingAddress"))
        .map(|a| {
            let mut ar = Reader::new(a);
            PostalAddress {
                name: ar.string(&["Name"], false),
                lines: ar.street(&["AddressLine1", "AddressLine2", "AddressLine3"]),
                city: ar.string(&["City"], false),
                region: ar.string(&["StateOrRegion"], false),
                postal_code: ar.string(&["PostalCode"], false),
                country_code: ar.string(&["CountryCode"], false),
                phone: ar.string(&["Phone"], false),
                ..Default::default()
            }
        });
    let subtotal = top.fits(super::subtotal(&lines), "items.OrderItems");
    let tax_total = top.fits(super::sum(taxes), "items.OrderItems");
    let total = r.money(&["OrderTotal", "Amount"], &currency);
    let order_time = super::super::time::parse_rfc3339(&r.string(&["PurchaseDate"], false));
    let promise_time = super::super::time::parse_rfc3339(&r.string(&["LatestDeliveryDate"], false));
    let status = r.string(&["OrderStatus"], false);
    let cancelled = status == "Canceled";
    // Amazon: pending orders must not ship (payment not authorized yet).
    let awaiting_payment = super::unpaid("Amazon", &status, &["Pending", "PendingAvailability"]);
    let speed = r.string(&["ShipmentServiceLevelCategory"], false);
    let service_level = super::amazon_2026::service_level(&speed) as i32;
    top.take(r.v, "order");
    let order = Order {
        channel_order_id: id,
        currency_code: currency.clone(),
        lines,
        ship_to,
        totals: Some(OrderTotals {
            subtotal: money(Some(subtotal)),
            shipping: money(Some(0)),
            tax: money(Some(tax_total)),
            discount: money(Some(0)),
            total: money(total),
        }),
        order_time,
        promise_time,
        service_level,
        ..Default::default()
    };
    top.v.into_result(Mapped {
        order,
        cancelled,
        awaiting_payment,
        ..Default::default()
    })
}
