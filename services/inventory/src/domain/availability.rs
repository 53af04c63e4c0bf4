//! Available-to-promise from the record: on-hand, safety stock and holds.
//! The Redis gate keeps the same figures incrementally; `gate_fields` is
//! what a rebuild writes, so both sides share one definition.
use super::pairs::{PairMap, figure, find};
use chrono::{DateTime, Utc};
use oms_proto::inventory::{Arrival, Availability, ChannelRule, channel_rule::Buffer};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Units due at one time (None: not said).
type Due = (Option<DateTime<Utc>>, i64);

#[derive(Debug, Default)]
pub struct Figures {
    /// On-hand per (node, sku).
    pub on_hand: PairMap<i64>,
    /// The part of it in expired lots, per (node, sku): never promised.
    pub expired: PairMap<i64>,
    /// Held per (sku, node); node '' = held anywhere in the network.
    pub held: PairMap<i64>,
    /// Safety stock per (node, sku); sku '' = node default.
    pub safety: PairMap<i64>,
    /// Enabled nodes the tenant may use.
    pub enabled: HashSet<String>,
    /// Units on the way by transfers in transit, per (receiving node, sku):
    /// shown, never promised.
    pub in_transit: PairMap<i64>,
    /// Units inbound deliveries still bring, per (receiving node, sku):
    /// shown, never promised.
    inbound: PairMap<i64>,
    /// The units of both per (receiving node, sku), by expected arrival
    /// (None: not said).
    arrivals: PairMap<Vec<Due>>,
    /// Units backorders ask for per (sku, channel; '' = orders of no
    /// channel), and per SKU in all: kept out of published figures.
    backordered: PairMap<i64>,
    backordered_total: HashMap<String, i64>,
    /// The nodes with stock or holds of each SKU, built on first use:
    /// figures are filled, then read. Without it, each SKU's nodes were
    /// found by scanning every (node, SKU) figure, and a rebuild of 2,000
    /// SKUs over 102,000 stock rows took 11 s, holding the tenant's
    /// reservations all along.
    by_sku: std::sync::OnceLock<HashMap<String, Vec<String>>>,
    /// The nodes each SKU is on its way to, built on first use likewise.
    arriving_by_sku: std::sync::OnceLock<HashMap<String, Vec<String>>>,
}

/// Units on their way to a node: (receiving node, sku, expected arrival
/// (None: not said), units).
pub type Arriving = (String, String, Option<DateTime<Utc>>, i64);

/// Adds `rows` to the units on their way per (node, sku) in `total`
/// (transfers' or deliveries'), and to the arrivals of both.
fn add_arriving(total: &mut PairMap<i64>, arrivals: &mut PairMap<Vec<Due>>, rows: Vec<Arriving>) {
    for (node, sku, at, q) in rows {
        let k = (node, sku);
        *total.entry(k.clone()).or_default() += q;
        arrivals.entry(k).or_default().push((at, q));
    }
}

impl Figures {
    /// Adds stock rows as `repo::stock::on_hand` reads them: (node, sku,
    /// on hand, of it expired), one per lot, summed per node and SKU.
    pub fn add_stock(&mut self, rows: Vec<(String, String, i64, i64)>) {
        for (node, sku, q, expired) in rows {
            if expired != 0 {
                *(self.expired)
                    .entry((node.clone(), sku.clone()))
                    .or_default() += expired;
            }
            *self.on_hand.entry((node, sku)).or_default() += q;
        }
    }

    /// Adds units on the way, as `repo::transfers::on_the_way` reads them.
    pub fn add_on_the_way(&mut self, rows: Vec<Arriving>) {
        add_arriving(&mut self.in_transit, &mut self.arrivals, rows);
    }

    /// Adds units inbound deliveries bring, as `repo::inbound::expected`
    /// reads them.
    pub fn add_expected_inbound(&mut self, rows: Vec<Arriving>) {
        add_arriving(&mut self.inbound, &mut self.arrivals, rows);
    }

    /// The units on the way to `nodes`, by expected arrival: soonest
    /// first, those of no time said last.
    fn arrivals_at<'a>(&self, nodes: impl Iterator<Item = &'a String>, sku: &str) -> Vec<Arrival> {
        let mut by_time: BTreeMap<(bool, Option<DateTime<Utc>>), i64> = BTreeMap::new();
        for n in nodes {
            for (at, q) in find(&self.arrivals, n, sku).map_or(&[][..], Vec::as_slice) {
                *by_time.entry((at.is_none(), *at)).or_default() += q;
            }
        }
        (by_time.into_iter())
            .map(|((_, at), units)| Arrival {
                expected_arrival_time: at.map(oms_runtime::time::to_timestamp),
                units,
            })
            .collect()
    }

    /// Adds what backorders ask for, as `repo::backorders::of` reads it.
    pub fn add_backorders(&mut self, rows: Vec<(String, String, i64)>) {
        for (sku, channel, q) in rows {
            *self.backordered_total.entry(sku.clone()).or_default() += q;
            self.backordered.insert((sku, channel), q);
        }
    }

    fn backordered_in(&self, sku: &str, channel: &str) -> i64 {
        figure(&self.backordered, sku, channel)
    }

    fn expired_at(&self, node: &str, sku: &str) -> i64 {
        figure(&self.expired, node, sku)
    }

    fn in_transit_to(&self, node: &str, sku: &str) -> i64 {
        figure(&self.in_transit, node, sku)
    }

    fn inbound_to(&self, node: &str, sku: &str) -> i64 {
        figure(&self.inbound, node, sku)
    }

    fn safety_of(&self, node: &str, sku: &str) -> i64 {
        crate::repo::rules::effective(&self.safety, node, sku)
    }

    /// Nodes where the SKU has stock or holds, enabled only.
    fn nodes_of(&self, sku: &str) -> Vec<&String> {
        let by_sku = self.by_sku.get_or_init(|| {
            let stocked = self.on_hand.keys().map(|(n, s)| (s, n));
            let held = self.held.keys().filter(|(_, n)| !n.is_empty());
            nodes_by_sku(stocked.chain(held.map(|(s, n)| (s, n))))
        });
        let nodes = by_sku.get(sku).map_or(&[][..], Vec::as_slice);
        nodes.iter().filter(|n| self.enabled.contains(*n)).collect()
    }

    /// Enabled nodes the SKU is on its way to (by transfer or delivery).
    fn arriving(&self, sku: &str) -> impl Iterator<Item = &String> {
        let by_sku = self
            .arriving_by_sku
            .get_or_init(|| nodes_by_sku(self.arrivals.keys().map(|(n, s)| (s, n))));
        let nodes = by_sku.get(sku).map_or(&[][..], Vec::as_slice);
        nodes.iter().filter(|n| self.enabled.contains(*n))
    }

    /// What a node can still promise of a SKU (negative when over-held).
    pub fn promisable_at(&self, node: &str, sku: &str) -> i64 {
        figure(&self.on_hand, node, sku)
            - self.expired_at(node, sku)
            - self.safety_of(node, sku)
            - figure(&self.held, sku, node)
    }

    /// Units held at a node beyond its unexpired stock (safety stock
    /// aside: it is no promise); 0 when the stock covers them.
    pub fn held_beyond_stock(&self, node: &str, sku: &str) -> i64 {
        let stock = figure(&self.on_hand, node, sku) - self.expired_at(node, sku);
        (figure(&self.held, sku, node) - stock).max(0)
    }

    fn network_held(&self, sku: &str) -> i64 {
        figure(&self.held, sku, "")
    }

    /// The gate's hash for a SKU: `n:<node>` per enabled node, `nh`.
    pub fn gate_fields(&self, sku: &str) -> BTreeMap<String, i64> {
        let mut f: BTreeMap<String, i64> = self
            .nodes_of(sku)
            .into_iter()
            .map(|n| (format!("n:{n}"), self.promisable_at(n, sku)))
            .collect();
        f.insert("nh".into(), self.network_held(sku));
        f
    }

    /// One figure per enabled node that has the SKU or has some on the
    /// way; or, for nodes named in `only`, one per node named, so that an
    /// answer never leaves a node out: a named node that cannot promise
    /// the SKU (disabled, or with none of it) gets an empty figure, as the
    /// feed sends for it.
    pub fn per_node(&self, sku: &str, only: &[String]) -> Vec<Availability> {
        let mut nodes = if only.is_empty() {
            let mut all: Vec<String> = self.nodes_of(sku).into_iter().cloned().collect();
            all.extend(self.arriving(sku).cloned());
            all
        } else {
            only.to_vec()
        };
        nodes.sort();
        nodes.dedup();
        nodes
            .into_iter()
            .map(|n| {
                if !self.enabled.contains(&n) {
                    return empty_at(sku, &n);
                }
                let on_hand = figure(&self.on_hand, &n, sku);
                let reserved = figure(&self.held, sku, &n);
                let held_back = self.safety_of(&n, sku);
                let expired = self.expired_at(&n, sku);
                let arrivals = self.arrivals_at(std::iter::once(&n), sku);
                Availability {
                    sku: sku.to_owned(),
                    available: self.promisable_at(&n, sku).max(0),
                    in_transit: self.in_transit_to(&n, sku),
                    expected_inbound: self.inbound_to(&n, sku),
                    node_id: n,
                    channel: String::new(),
                    on_hand,
                    reserved,
                    held_back,
                    expired,
                    backordered: 0,
                    arrivals,
                    restock_time: None,
                }
            })
            .collect()
    }

    /// The figure over a pool of nodes (every enabled node when empty).
    pub fn pooled(&self, sku: &str, pool: &[String]) -> Availability {
        let in_pool = among(pool);
        let nodes: Vec<&String> = self
            .nodes_of(sku)
            .into_iter()
            .filter(|n| in_pool(n))
            .collect();
        let mut a = Availability {
            sku: sku.to_owned(),
            reserved: self.network_held(sku),
            ..Default::default()
        };
        let mut promisable = 0;
        for n in &nodes {
            a.on_hand += figure(&self.on_hand, n, sku);
            a.reserved += figure(&self.held, sku, n);
            a.held_back += self.safety_of(n, sku);
            a.expired += self.expired_at(n, sku);
            promisable += self.promisable_at(n, sku).max(0);
        }
        a.available = (promisable - self.network_held(sku)).max(0);
        a.in_transit = self
            .arriving(sku)
            .filter(|n| in_pool(n))
            .map(|n| self.in_transit_to(n, sku))
            .sum();
        a.expected_inbound = (self.arriving(sku).filter(|n| in_pool(n)))
            .map(|n| self.inbound_to(n, sku))
            .sum();
        a.arrivals = self.arrivals_at(self.arriving(sku).filter(|n| in_pool(n)), sku);
        a
    }

    /// What the network may still sell: every node's, less what
    /// backorders ask for (unless `before_backorders`).
    pub fn for_network(&self, sku: &str, before_backorders: bool) -> Availability {
        let mut a = self.pooled(sku, &[]);
        a.backordered = self.backordered_total.get(sku).copied().unwrap_or(0);
        a.restock_time = restock(a.available, a.backordered, &a.arrivals);
        if !before_backorders {
            a.available = (a.available - a.backordered).max(0);
        }
        a
    }

    /// What a channel may sell: its pool, minus its buffer, minus what its
    /// own backorders and those of no channel ask for (unless
    /// `before_backorders`), and never more than the network may still
    /// sell (other channels' backorders may wait for the same nodes).
    pub fn for_channel(
        &self,
        sku: &str,
        channel: &str,
        rule: Option<&ChannelRule>,
        before_backorders: bool,
    ) -> Availability {
        let pool = rule.map_or(&[][..], |r| r.node_ids.as_slice());
        let mut a = self.pooled(sku, pool);
        let buffer = match rule.and_then(|r| r.buffer) {
            // Rounded up, as the gate does (common.lua): a buffer that
            // rounded down would hold nothing of the last few units.
            Some(Buffer::BufferPercent(p)) => (a.available * i64::from(p) + 99) / 100,
            Some(Buffer::BufferQuantity(q)) => q,
            None => 0,
        };
        a.held_back += buffer;
        a.available = (a.available - buffer).max(0);
        a.channel = channel.to_owned();
        a.backordered = self.backordered_in(sku, channel) + self.backordered_in(sku, "");
        let network = self.for_network(sku, false);
        // It sells when its pool has units beyond its backorders and the
        // network beyond all of them: the later of the two dates.
        let own = restock(a.available, a.backordered, &a.arrivals);
        a.restock_time = match (a.available > a.backordered, network.available > 0) {
            (true, true) => None,
            (true, false) => network.restock_time,
            (false, true) => own,
            (false, false) => later(own, network.restock_time),
        };
        if !before_backorders {
            a.available = (a.available - a.backordered).max(0).min(network.available);
        }
        a
    }
}

/// When units are sellable again for a figure with `promisable` units
/// (before backorders), `backordered` asked for, and `arrivals` to come
/// (soonest first, those of no time last): the arrival that brings the
/// first unit beyond the backorders. None when some are sellable now, or
/// no arrival with a time said reaches that far.
fn restock(
    promisable: i64,
    backordered: i64,
    arrivals: &[Arrival],
) -> Option<prost_types::Timestamp> {
    let mut short = backordered - promisable.max(0) + 1;
    if short <= 0 {
        return None;
    }
    for a in arrivals {
        short -= a.units;
        if short <= 0 {
            return a.expected_arrival_time;
        }
    }
    None
}

/// The later of two times; None when either is unknown.
fn later(
    a: Option<prost_types::Timestamp>,
    b: Option<prost_types::Timestamp>,
) -> Option<prost_types::Timestamp> {
    let (a, b) = (a?, b?);
    Some(if (a.seconds, a.nanos) >= (b.seconds, b.nanos) {
        a
    } else {
        b
    })
}

/// (SKU, node) pairs as each SKU's nodes, sorted, each once.
fn nodes_by_sku<'a>(
    pairs: impl Iterator<Item = (&'a String, &'a String)>,
) -> HashMap<String, Vec<String>> {
    let mut by_sku: HashMap<String, Vec<String>> = HashMap::new();
    for (sku, node) in pairs {
        by_sku.entry(sku.clone()).or_default().push(node.clone());
    }
    for nodes in by_sku.values_mut() {
        nodes.sort();
        nodes.dedup();
    }
    by_sku
}

/// The figure of a node that can promise none of a SKU (disabled, no
/// longer shared, or without it): every count 0.
pub(crate) fn empty_at(sku: &str, node: &str) -> Availability {
    Availability {
        sku: sku.to_owned(),
        node_id: node.to_owned(),
        ..Default::default()
    }
}

/// Whether a node is one of `nodes` (every node when empty), looked up in
/// a set: a channel's pool may name hundreds of stores, asked about for
/// each of up to 1,000 SKUs.
pub(crate) fn among(nodes: &[String]) -> impl Fn(&str) -> bool + '_ {
    let set: HashSet<&str> = nodes.iter().map(String::as_str).collect();
    move |n| set.is_empty() || set.contains(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn figures() -> Figures {
        let mut f = Figures::default();
        f.on_hand.insert(("A".into(), "S".into()), 10);
        f.on_hand.insert(("B".into(), "S".into()), 3);
        f.on_hand.insert(("OFF".into(), "S".into()), 50);
        f.safety.insert(("B".into(), String::new()), 5);
        f.held.insert(("S".into(), "A".into()), 4);
        f.held.insert(("S".into(), String::new()), 2);
        f.enabled = ["A".to_string(), "B".to_string()].into();
        f
    }

    #[test]
    fn network_counts_each_node_at_most_what_it_has() {
        let f = figures();
        // A: 10 - 4 = 6; B: 3 - 5 = -2 counts as 0; minus 2 held in the network.
        let a = f.pooled("S", &[]);
        assert_eq!(a.available, 4);
        assert_eq!(a.on_hand, 13, "disabled nodes do not count");
        assert_eq!(a.reserved, 6);
        assert_eq!(a.held_back, 5);
        assert_eq!(
            f.gate_fields("S"),
            BTreeMap::from([("n:A".into(), 6), ("n:B".into(), -2), ("nh".into(), 2)])
        );
    }

    #[test]
    fn expired_lots_are_on_hand_but_never_promised() {
        let mut f = figures();
        // A has 10 on hand in two lots, the 7 of one expired: 3 - 4 held
        // = -1.
        f.on_hand.remove(&("A".into(), "S".into()));
        f.add_stock(vec![
            ("A".into(), "S".into(), 3, 0),
            ("A".into(), "S".into(), 7, 7),
        ]);
        let a = f.pooled("S", &[]);
        assert_eq!((a.on_hand, a.expired), (13, 7));
        assert_eq!(a.available, 0, "A over-held counts 0, B -2 counts 0");
        assert_eq!(f.gate_fields("S")["n:A"], -1);
        let at_a = &f.per_node("S", &["A".into()])[0];
        assert_eq!((at_a.on_hand, at_a.expired, at_a.available), (10, 7, 0));
        assert_eq!(f.held_beyond_stock("A", "S"), 1, "4 held on 3 unexpired");
        assert_eq!(
            f.held_beyond_stock("B", "S"),
            0,
            "safety stock is no promise"
        );
    }

    #[test]
    fn units_on_the_way_are_shown_and_never_promised() {
        let mut f = figures();
        let day = |d: u32| Some(Utc.with_ymd_and_hms(2026, 12, d, 0, 0, 0).unwrap());
        f.add_on_the_way(vec![
            ("B".into(), "S".into(), day(9), 4),
            ("B".into(), "S".into(), None, 3),
            ("C".into(), "S".into(), day(7), 9),
            ("OFF".into(), "S".into(), day(1), 11),
        ]);
        f.enabled.insert("C".into());
        let a = f.pooled("S", &[]);
        assert_eq!(
            (a.in_transit, a.available),
            (16, 4),
            "disabled OFF not counted"
        );
        assert_eq!(f.pooled("S", &["A".into(), "B".into()]).in_transit, 7);
        // What comes when: soonest first, no time said last, OFF's none.
        let when = |a: &Availability| -> Vec<(Option<i64>, i64)> {
            (a.arrivals.iter())
                .map(|x| (x.expected_arrival_time.as_ref().map(|t| t.seconds), x.units))
                .collect()
        };
        let ts = |d: u32| day(d).map(|t| t.timestamp());
        assert_eq!(when(&a), [(ts(7), 9), (ts(9), 4), (None, 3)]);
        assert_eq!(
            when(&f.per_node("S", &["B".into()])[0]),
            [(ts(9), 4), (None, 3)]
        );
        let at_c = f.per_node("S", &["C".into()]);
        assert_eq!(at_c.len(), 1, "a node with units only on the way is listed");
        assert_eq!(
            (at_c[0].on_hand, at_c[0].in_transit, at_c[0].available),
            (0, 9, 0)
        );
        assert!(
            !f.gate_fields("S").contains_key("n:C"),
            "nothing to promise at C"
        );
    }

    #[test]
    fn a_named_node_always_has_a_figure() {
        let mut f = figures();
        f.enabled.insert("C".into());
        let every: Vec<String> = (f.per_node("S", &[]).into_iter())
            .map(|a| a.node_id)
            .collect();
        assert_eq!(every, ["A", "B"], "unnamed: the enabled nodes with stock");
        let named = ["OFF", "A", "C", "A"].map(String::from);
        let named = f.per_node("S", &named);
        let got: Vec<(&str, i64, i64)> = (named.iter())
            .map(|a| (a.node_id.as_str(), a.on_hand, a.available))
            .collect();
        assert_eq!(got, [("A", 10, 6), ("C", 0, 0), ("OFF", 0, 0)]);
        let empty = Availability {
            sku: "S".into(),
            node_id: "OFF".into(),
            ..Default::default()
        };
        assert_eq!(named[2], empty, "disabled: its 50 promised nowhere");
    }

    #[test]
    fn channel_buffers() {
        let f = figures();
        let pct = ChannelRule {
            channel: "channels/web".into(),
            node_ids: vec![],
            buffer: Some(Buffer::BufferPercent(50)),
        };
        assert_eq!(
            f.for_channel("S", "channels/web", Some(&pct), false)
                .available,
            2
        );
        let small = ChannelRule {
            buffer: Some(Buffer::BufferPercent(10)),
            ..pct.clone()
        };
        let a = f.for_channel("S", "channels/web", Some(&small), false);
        assert_eq!(
            (a.held_back, a.available),
            (5 + 1, 3),
            "10 % of 4 holds 1 back"
        );
        let qty = ChannelRule {
            channel: "channels/web".into(),
            node_ids: vec!["A".into()],
            buffer: Some(Buffer::BufferQuantity(1)),
        };
        assert_eq!(
            f.for_channel("S", "channels/web", Some(&qty), false)
                .available,
            3
        );
        assert_eq!(f.for_channel("S", "channels/web", None, false).available, 4);
    }

    #[test]
    fn published_figures_keep_what_backorders_ask_for() {
        let mut f = figures();
        // Network: 4 promisable (see above).
        f.add_backorders(vec![
            ("S".into(), "channels/web".into(), 1),
            ("S".into(), String::new(), 2),
        ]);
        let a = f.for_network("S", false);
        assert_eq!((a.backordered, a.available), (3, 1));
        assert_eq!(f.for_network("S", true).available, 4, "before backorders");
        let pool_a = ChannelRule {
            channel: "channels/web".into(),
            node_ids: vec!["A".into()],
            buffer: None,
        };
        // Web's pool A: 6 less the network's 2 held = 4, less its own 1
        // and the 2 of no channel = 1; the network has 1 left too.
        let web = f.for_channel("S", "channels/web", Some(&pool_a), false);
        assert_eq!((web.backordered, web.available), (3, 1));
        let shop = ChannelRule {
            channel: "channels/shop".into(),
            ..pool_a.clone()
        };
        let shop = f.for_channel("S", "channels/shop", Some(&shop), false);
        assert_eq!(
            (shop.backordered, shop.available),
            (2, 1),
            "web's 1 via the network"
        );
        f.add_backorders(vec![("S".into(), String::new(), 9)]);
        assert_eq!(f.for_network("S", false).available, 0, "never below zero");
        assert_eq!(
            f.for_channel("S", "channels/web", Some(&pool_a), true)
                .available,
            4
        );
        assert_eq!(
            f.per_node("S", &["A".into()])[0].backordered,
            0,
            "nodes: none"
        );
    }

    #[test]
    fn a_sold_out_figure_says_when_units_are_sellable_again() {
        let mut f = figures();
        // 4 promisable in the network; 5 asked for by backorders.
        f.add_backorders(vec![("S".into(), String::new(), 5)]);
        let day = |d: u32| Some(Utc.with_ymd_and_hms(2026, 12, d, 0, 0, 0).unwrap());
        f.add_on_the_way(vec![
            ("B".into(), "S".into(), day(9), 1),
            ("B".into(), "S".into(), day(11), 1),
        ]);
        let secs = |a: &Availability| a.restock_time.map(|t| t.seconds);
        let ts = |d: u32| day(d).map(|t| t.timestamp());
        // The 9th brings the 5th unit the backorders take; the 11th one more.
        assert_eq!(secs(&f.for_network("S", false)), ts(11));
        let pool_a = ChannelRule {
            channel: "channels/web".into(),
            node_ids: vec!["A".into()],
            buffer: None,
        };
        // Nothing comes to A: the web pool has no date.
        assert_eq!(
            secs(&f.for_channel("S", "channels/web", Some(&pool_a), false)),
            None
        );
        assert_eq!(
            secs(&f.for_channel("S", "channels/shop", None, false)),
            ts(11)
        );
        let mut g = figures();
        g.add_backorders(vec![("S".into(), String::new(), 1)]);
        assert_eq!(secs(&g.for_network("S", false)), None, "units sellable now");
        assert_eq!(g.for_network("S", false).available, 3);
    }
}
