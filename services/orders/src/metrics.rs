//! Business metrics of the orders service (RED metrics per method come
//! from oms-runtime): shipped units inventory would not take from stock,
//! reserved orders routing could not place, steps woken when stock
//! they waited for came, and backorder demand inventory was not told.
use opentelemetry::{KeyValue, global, metrics::Counter};

#[derive(Clone)]
pub struct Metrics {
    untaken: Counter<u64>,
    deferred: Counter<u64>,
    woken: Counter<u64>,
    unpublished: Counter<u64>,
}

impl Metrics {
    pub fn new() -> Self {
        let untaken = global::meter("oms-orders")
            .u64_counter("oms.orders.shipped_units_untaken")
            .with_description(
                "Shipped units inventory refused to take from stock (a serial or lot it does not have at the node, nothing allocated there), by tenant and node: they stay on hand and held until someone consumes them by hand",
            )
            .build();
        let deferred = global::meter("oms-orders")
            .u64_counter("oms.orders.routing_deferred")
            .with_description(
                "Reserved orders routing could not place in full yet, by tenant, counted once per reason (each OrderRoutingDeferred event): a node set aside (a capability, capacity, a rule) leaves them waiting, their units held",
            )
            .build();
        let woken = global::meter("oms-orders")
            .u64_counter("oms.orders.stock_wakes")
            .with_description(
                "Steps waiting for stock (backordered orders, rests and reroutes short of stock, plans deferred for want of it) woken because stock came, by tenant: the inventory feed reaching orders; none while orders backorder means they wait out their backoff",
            )
            .build();
        let unpublished = global::meter("oms-orders")
            .u64_counter("oms.orders.demand_publish_failures")
            .with_description(
                "Attempts to tell inventory what backorders ask for that failed, by tenant (inventory down or refusing, the database): until one succeeds, published availability shows units the backorders will take, or keeps units for orders no longer waiting",
            )
            .build();
        Metrics {
            untaken,
            deferred,
            woken,
            unpublished,
        }
    }

    /// `steps` waiting for stock were woken because stock came.
    pub fn woken(&self, tenant: &str, steps: u64) {
        if steps > 0 {
            self.woken
                .add(steps, &[KeyValue::new("tenant", tenant.to_owned())]);
        }
    }

    /// Telling inventory a tenant's backorder demand failed.
    pub fn unpublished(&self, tenant: &str) {
        self.unpublished
            .add(1, &[KeyValue::new("tenant", tenant.to_owned())]);
    }

    /// A reserved order routing could not place, for a new reason.
    pub fn deferred(&self, tenant: &str) {
        self.deferred
            .add(1, &[KeyValue::new("tenant", tenant.to_owned())]);
    }

    /// `units` a node shipped that inventory refused to take from stock.
    pub fn untaken(&self, tenant: &str, node: &str, units: i64) {
        let units = u64::try_from(units).unwrap_or(0);
        if units > 0 {
            let attrs = [
                KeyValue::new("tenant", tenant.to_owned()),
                KeyValue::new("node", node.to_owned()),
            ];
            self.untaken.add(units, &attrs);
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
