//! The engine's view of the world: nodes, stock, the order and the plan.
//! Everything is indexed (nodes by position in `Network::nodes`, SKUs by
//! position in `Order::skus`) so that planning allocates little; names are
//! only looked up when a plan is rendered.
use super::carrier::Unit;
use oms_proto::common::{DeliveryMethod, NodeKind, ServiceLevel};
use std::collections::HashMap;

/// A point on earth in degrees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Geo {
    pub lat: f64,
    pub lon: f64,
}

/// A node as routing sees it.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub id: String,
    pub kind: NodeKind,
    pub region: String,
    pub country: String,
    pub enabled: bool,
    pub ship: bool,
    pub pickup: bool,
    pub ship_from_store: bool,
    pub geo: Option<Geo>,
    pub priority: i32,
    /// Orders per day; 0 is unlimited.
    pub daily_capacity: i32,
    /// Minutes after local midnight after which work ships the next day.
    pub cutoff_minute: Option<u32>,
    /// The node's offset from UTC now, in minutes (taken when the network
    /// snapshot is loaded, so planning needs no time zone database).
    pub utc_offset_minutes: i32,
}

impl NodeInfo {
    /// Whether the node may ship parcels to customers: stores only when
    /// they enable ship-from-store, every other kind when it ships.
    pub fn ships_to_customers(&self) -> bool {
        match self.kind {
            NodeKind::Store => self.ship_from_store,
            _ => self.ship,
        }
    }
}

/// The nodes a tenant may use, sorted by id.
#[derive(Debug, Clone, Default)]
pub struct Network {
    pub nodes: Vec<NodeInfo>,
    /// Each node's position for distances (parallel to `nodes`).
    pub units: Vec<Option<Unit>>,
    /// Channels whose stock comes from a pool of nodes (inventory's
    /// channel rules): whether each node is in it (parallel to `nodes`).
    pub pools: HashMap<String, Vec<bool>>,
}

impl Network {
    pub fn new(mut nodes: Vec<NodeInfo>) -> Self {
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        let units = nodes.iter().map(|n| n.geo.map(Unit::of)).collect();
        Network {
            nodes,
            units,
            pools: HashMap::new(),
        }
    }

    /// The network with channels' pools of nodes (channel, node ids); an
    /// empty pool is every node, as in inventory.
    pub fn with_pools(mut self, pools: impl IntoIterator<Item = (String, Vec<String>)>) -> Self {
        for (channel, ids) in pools.into_iter().filter(|(_, ids)| !ids.is_empty()) {
            let mut mask = vec![false; self.nodes.len()];
            for i in ids.iter().filter_map(|id| self.index_of(id)) {
                mask[i] = true;
            }
            self.pools.insert(channel, mask);
        }
        self
    }

    /// The nodes an order of `channel` may take stock from; None: every node.
    pub fn pool(&self, channel: &str) -> Option<&[bool]> {
        self.pools.get(channel).map(Vec::as_slice)
    }

    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.nodes.binary_search_by(|n| n.id.as_str().cmp(id)).ok()
    }
}

/// Available units per (order SKU, node), stored node by node: planning
/// mostly walks one node's SKUs, which then sit side by side in memory.
/// Stored as 32-bit counts (at most [`Stock::MAX`] at one node, which no
/// order line comes near): the per-node passes over every node's stock
/// then run as vector code on any x86-64, which has no 64-bit vector
/// compare before SSE4.2.
#[derive(Debug, Clone)]
pub struct Stock {
    skus: usize,
    avail: Vec<i32>,
}

impl Stock {
    pub fn new(skus: usize, nodes: usize) -> Self {
        Stock {
            skus,
            avail: vec![0; skus * nodes],
        }
    }

    /// The most units counted at one node; more count as this many.
    pub const MAX: i64 = i32::MAX as i64;

    pub fn get(&self, sku: usize, node: usize) -> i64 {
        i64::from(self.avail[node * self.skus + sku])
    }

    pub fn set(&mut self, sku: usize, node: usize, units: i64) {
        self.avail[node * self.skus + sku] = units.clamp(0, Self::MAX) as i32;
    }

    /// Units per order SKU at `node`.
    pub fn at(&self, node: usize) -> &[i32] {
        &self.avail[node * self.skus..(node + 1) * self.skus]
    }
}

/// One line to place.
#[derive(Debug, Clone)]
pub struct Line {
    pub id: String,
    /// Index into `Order::skus`.
    pub sku: usize,
    pub quantity: i64,
    /// Minor units of the order currency.
    pub unit_price: i64,
}

/// The order as routing sees it.
#[derive(Debug, Clone)]
pub struct Order {
    pub name: String,
    pub lines: Vec<Line>,
    /// Distinct SKUs of the lines.
    pub skus: Vec<String>,
    pub ship_to_geo: Option<Geo>,
    pub country: String,
    pub region: String,
    pub delivery: DeliveryMethod,
    pub pickup_node_id: String,
    pub service_level: ServiceLevel,
    /// Promised delivery, seconds since the epoch.
    pub promise_epoch_s: Option<i64>,
    pub channel: String,
    pub priority: i32,
    /// ISO 4217 code of the unit prices.
    pub currency: String,
}

/// What else the engine needs to know when it plans.
#[derive(Debug, Clone, Copy)]
pub struct Situation<'a> {
    pub network: &'a Network,
    pub stock: &'a Stock,
    /// Shipments already planned today per node (parallel to the nodes).
    pub used_today: &'a [i64],
    /// (node, order SKU) whose standing is lowered after a reroute.
    pub penalties: &'a [(usize, usize)],
    /// Nodes that must not ship this plan (the node that just failed).
    pub excluded: &'a [usize],
    /// The order's channel's pool (`Network::pool`): no stock is taken
    /// outside it. None: every node.
    pub pool: Option<&'a [bool]>,
    /// Now, seconds since the epoch.
    pub now_epoch_s: i64,
}

impl Situation<'_> {
    /// Whether node `i` is outside the order's channel's pool.
    pub fn outside_pool(&self, i: usize) -> bool {
        self.pool.is_some_and(|p| !p[i])
    }
}

/// Why a node cannot take part under a rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reject {
    Disabled,
    Excluded,
    OutsidePool,
    Kind,
    CannotShip,
    NoPickup,
    NoShipFromStore,
    Region,
    DistanceUnknown,
    TooFar {
        km: f64,
        limit: f64,
    },
    CapacityExhausted {
        capacity: i32,
    },
    CapacityBelow {
        left: i64,
        min: i32,
    },
    NoStock,
    /// A single-shipment rule, and the node lacks some of the order.
    NotWhole,
    /// The pickup store itself, when sourcing what it lacks.
    PickupStore,
}

/// One node as evaluated under the rule used.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub node: usize,
    pub reject: Option<Reject>,
    /// Lower is better; meaningful for eligible nodes.
    pub score: f64,
    /// (raw, weighted) per criterion of the rule, in the rule's order
    /// (a rule has at most one of each of the six criteria).
    pub parts: [(f64, f64); 6],
    pub chosen: bool,
}

/// Units of a line placed at a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assignment {
    pub line: usize,
    pub node: usize,
    pub quantity: i64,
    /// Pickup orders: the store the units travel to.
    pub transfer_to: Option<usize>,
}

/// Units of a line that no node ships now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backorder {
    pub line: usize,
    pub quantity: i64,
    pub reason: String,
}

/// How one rule was evaluated.
#[derive(Debug, Clone)]
pub struct RuleEval {
    pub rule: usize,
    pub matched: bool,
    pub reason: String,
}

/// The engine's answer.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Index of the rule used.
    pub rule: Option<usize>,
    pub assignments: Vec<Assignment>,
    pub backorders: Vec<Backorder>,
    pub hold: bool,
    pub shipments: usize,
    pub cost: f64,
    pub rules: Vec<RuleEval>,
    /// Every node under the rule used (or the last rule tried).
    pub candidates: Vec<Candidate>,
    /// Why nothing or not everything was placed, when that is so.
    pub shortfall: Option<String>,
}
