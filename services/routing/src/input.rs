//! Checking a `RoutingOrder` and turning it into the engine's order.
use crate::engine::{
    self,
    model::{Geo, Line, Order},
};
use oms_kernel::{Violations, parse_name};
use oms_proto::common::DeliveryMethod;
use oms_proto::routing::RoutingOrder;
use std::collections::BTreeSet;

pub const MAX_LINES: usize = 500;
/// Most units of a line, as orders takes them (the engine sums them).
const MAX_QUANTITY: i64 = 1_000_000;

/// The engine's order for `o`, or what is wrong with it (fields under
/// `prefix`).
pub fn order(o: &RoutingOrder, prefix: &str) -> Result<Order, Violations> {
    let mut v = Violations::new();
    v.check(format!("{prefix}.order"), parse_name(&o.order, "orders"));
    if o.lines.is_empty() {
        v.add(format!("{prefix}.lines"), "at least one line is required");
    }
    if o.lines.len() > MAX_LINES {
        v.add(
            format!("{prefix}.lines"),
            format!("at most {MAX_LINES} lines"),
        );
    }
    let delivery = match DeliveryMethod::try_from(o.delivery_method) {
        Ok(DeliveryMethod::Unspecified) => DeliveryMethod::Ship,
        Ok(d) => d,
        Err(_) => {
            v.add(
                format!("{prefix}.delivery_method"),
                "unknown delivery method",
            );
            DeliveryMethod::Ship
        }
    };
    if delivery == DeliveryMethod::Pickup && o.pickup_node_id.is_empty() {
        v.add(
            format!("{prefix}.pickup_node_id"),
            "required for DELIVERY_METHOD_PICKUP",
        );
    } else if !o.pickup_node_id.is_empty() {
        let id = oms_kernel::check_id(&o.pickup_node_id);
        v.check(format!("{prefix}.pickup_node_id"), id);
    }
    let ship_to = o.ship_to.clone().unwrap_or_default();
    let geo = ship_to.geo.map(|g| Geo {
        lat: g.latitude,
        lon: g.longitude,
    });
    // As orders has it: a country code "de" would match no rule's "DE".
    if let Some(a) = &o.ship_to {
        oms_runtime::address::check_form(&mut v, &format!("{prefix}.ship_to"), a);
    }
    let mut skus: Vec<String> = Vec::new();
    let mut ids = BTreeSet::new();
    let mut currency = String::new();
    let mut lines = Vec::with_capacity(o.lines.len());
    for (i, l) in o.lines.iter().enumerate() {
        let f = format!("{prefix}.lines[{i}]");
        if l.line_id.is_empty() {
            v.add(format!("{f}.line_id"), "required");
        } else if l.line_id.len() > 64 {
            // An order line's limit.
            v.add(format!("{f}.line_id"), "must be at most 64 characters");
        } else if !ids.insert(l.line_id.as_str()) {
            v.add(format!("{f}.line_id"), "duplicate line id");
        }
        // Inventory refuses any other SKU, which would read as inventory
        // being unavailable.
        v.check(format!("{f}.sku"), oms_kernel::check_sku(&l.sku));
        if l.quantity <= 0 {
            v.add(format!("{f}.quantity"), "must be positive");
        } else if l.quantity > MAX_QUANTITY {
            v.add(
                format!("{f}.quantity"),
                format!("must be at most {MAX_QUANTITY}"),
            );
        }
        let price = l.unit_price.clone().unwrap_or_default();
        if price.amount_minor < 0 {
            v.add(
                format!("{f}.unit_price.amount_minor"),
                "must be zero or more",
            );
        }
        if !price.currency_code.is_empty() {
            if currency.is_empty() {
                currency = price.currency_code.clone();
            } else if currency != price.currency_code {
                v.add(
                    format!("{f}.unit_price.currency_code"),
                    format!("every line must be in one currency ({currency})"),
                );
            }
        }
        let sku = match skus.iter().position(|s| *s == l.sku) {
            Some(k) => k,
            None => {
                skus.push(l.sku.clone());
                skus.len() - 1
            }
        };
        lines.push(Line {
            id: l.line_id.clone(),
            sku,
            quantity: l.quantity,
            unit_price: price.amount_minor,
        });
    }
    v.into_result(Order {
        name: o.order.clone(),
        lines,
        skus,
        ship_to_geo: geo,
        country: ship_to.country_code,
        region: ship_to.region,
        delivery,
        pickup_node_id: o.pickup_node_id.clone(),
        service_level: engine::service_level(o.service_level),
        promise_epoch_s: o.promise_time.as_ref().map(|t| t.seconds),
        channel: o.channel.clone(),
        priority: o.priority,
        currency,
    })
}
