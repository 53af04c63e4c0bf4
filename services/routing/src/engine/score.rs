//! Filtering nodes through a rule and scoring the eligible ones. Each
//! criterion's raw measure is normalised over the eligible nodes to 0 (the
//! best of them) .. 1 (the worst) and multiplied by its weight; a node's
//! score is the sum (lower is better), so weights compare like with like
//! whatever the units.
use super::carrier;
use super::model::{Candidate, Geo, Order, Reject, Situation, Stock};
use super::rules::Rule;
use oms_proto::common::{DeliveryMethod, NodeKind};
use oms_proto::routing::Criterion;

/// What scoring needs to know about the order beyond the rule.
pub struct Target<'a> {
    pub order: &'a Order,
    /// Units wanted per order SKU.
    pub demand: &'a [i64],
    /// Where the parcels go: the ship-to, or the pickup store.
    pub origin: Option<Geo>,
    /// A pickup store that is sourcing what it lacks (not a source itself).
    pub pickup_store: Option<usize>,
    /// What each node holds of `demand` (see [`holdings`]): the same for
    /// every rule tried, so read once per plan.
    pub holdings: &'a [Holding],
}

fn lower_is_better(c: Criterion) -> bool {
    matches!(
        c,
        Criterion::Distance | Criterion::ShippingCost | Criterion::PromiseDate
    )
}

/// What a node holds of the order, from one pass over its stock.
#[derive(Clone, Copy)]
pub struct Holding {
    /// Some unit of some wanted SKU.
    any: bool,
    /// Everything wanted.
    pub(super) whole: bool,
    /// Units left over the demand, summed over the order's SKUs.
    depth: i64,
}

impl Holding {
    /// `demand` and `have` per order SKU, never negative (`Stock`);
    /// `wanted` is all ones where the demand is positive, else zero.
    fn of(demand: &[i32], wanted: &[i32], have: &[i32]) -> Holding {
        // Without branches (whether a node holds a SKU is as good as
        // random): the compiler turns this into vector code, 32-bit lanes
        // (see `Stock`).
        let n = demand.len().min(wanted.len()).min(have.len());
        let (demand, wanted, have) = (&demand[..n], &wanted[..n], &have[..n]);
        let (mut any, mut short, mut depth) = (0i32, 0i32, 0u64);
        for k in 0..n {
            any |= have[k] & wanted[k];
            short |= i32::from(demand[k] > have[k]);
            // Not negative, so widened without a sign.
            depth += u64::from((have[k] - demand[k]).max(0) as u32);
        }
        Holding {
            any: any != 0,
            whole: short == 0,
            depth: depth as i64,
        }
    }
}

/// What each node of the network that may ship holds of `demand`. A node
/// that is disabled, excluded from this plan, outside the order's channel's
/// pool or does not ship to customers
/// (a store without ship-from-store) is rejected under every rule before
/// its stock is looked at (`filter`: every plan ships, a pickup order's
/// shortfall to its store), so it counts as holding nothing: networks of
/// many stores, few of which ship, then read little stock.
pub fn holdings(demand: &[i64], s: &Situation) -> Vec<Holding> {
    let demand: Vec<i32> = demand
        .iter()
        .map(|d| (*d).clamp(0, Stock::MAX) as i32)
        .collect();
    let wanted: Vec<i32> = demand.iter().map(|d| -i32::from(*d > 0)).collect();
    let none = Holding {
        any: false,
        whole: false,
        depth: 0,
    };
    s.network
        .nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            if node.enabled
                && node.ships_to_customers()
                && !s.excluded.contains(&i)
                && !s.outside_pool(i)
            {
                Holding::of(&demand, &wanted, s.stock.at(i))
            } else {
                none
            }
        })
        .collect()
}

/// Evaluates every node of the network under `rule` into `out`.
pub fn candidates(rule: &Rule, t: &Target, s: &Situation, out: &mut Vec<Candidate>) {
    let order = t.order;
    // Distances cost trigonometry: only for a distance limit, or for the
    // nodes that pass the filters.
    let limited = rule.nodes.max_distance_km > 0.0;
    let origin = t.origin.map(carrier::Unit::of);
    // Each candidate written once, where the loop reaches its node (a
    // pass setting every candidate up beforehand cost 1.5-3 % of a
    // decision).
    out.clear();
    out.reserve(s.network.nodes.len());
    // Best and worst raw value per criterion, gathered as nodes are measured.
    let mut range = Range::new();
    for (i, node) in s.network.nodes.iter().enumerate() {
        let distance = || match (s.network.units[i], origin) {
            (Some(a), Some(b)) => Some(carrier::distance_between(a, b)),
            _ => None,
        };
        let mut km = if limited { distance() } else { None };
        let used = s.used_today.get(i).copied().unwrap_or(0);
        let holding = t.holdings[i];
        out.push(Candidate {
            node: i,
            reject: filter(rule, t, s, i, km, used, holding),
            score: 0.0,
            parts: [(0.0, 0.0); 6],
            chosen: false,
        });
        let Some(c) = out.last_mut().filter(|c| c.reject.is_none()) else {
            continue;
        };
        if !limited {
            km = distance();
        }
        let d = km.unwrap_or(carrier::UNKNOWN_DISTANCE_KM);
        for (k, (criterion, _)) in rule.ranking.iter().enumerate() {
            let raw = match criterion {
                Criterion::Distance => km.unwrap_or(f64::NAN),
                Criterion::ShippingCost => carrier::cost_minor(d, order.service_level),
                Criterion::NodePriority => f64::from(node.priority),
                Criterion::CapacityHeadroom => {
                    // Unlimited (0) counts as all headroom; computed
                    // either way so that it compiles to a select, not a
                    // branch that nodes take at random.
                    let share = used as f64 / f64::from(node.daily_capacity.max(1));
                    if node.daily_capacity == 0 {
                        1.0
                    } else {
                        1.0 - share
                    }
                }
                Criterion::PromiseDate => order.promise_epoch_s.map_or(0.0, |p| {
                    carrier::days_late(
                        s.now_epoch_s,
                        node.utc_offset_minutes,
                        node.cutoff_minute,
                        d,
                        order.service_level,
                        p,
                    ) as f64
                }),
                Criterion::StockDepth => holding.depth as f64,
                Criterion::Unspecified => 0.0,
            };
            c.parts[k].0 = raw;
        }
        range.add(&c.parts);
    }
    normalise(rule, &range, out);
}

fn filter(
    rule: &Rule,
    t: &Target,
    s: &Situation,
    i: usize,
    km: Option<f64>,
    used: i64,
    holding: Holding,
) -> Option<Reject> {
    let node = &s.network.nodes[i];
    let nf = &rule.nodes;
    // True in every plan (a pickup order's store is the one node that does
    // not ship, and it is no candidate here); `holdings` relies on it.
    let shipping = t.order.delivery != DeliveryMethod::Pickup || t.pickup_store.is_some();
    if !node.enabled {
        return Some(Reject::Disabled);
    }
    if s.excluded.contains(&i) || nf.exclude.contains(&node.id) {
        return Some(Reject::Excluded);
    }
    if s.outside_pool(i) {
        return Some(Reject::OutsidePool);
    }
    if t.pickup_store == Some(i) {
        return Some(Reject::PickupStore);
    }
    if !nf.kinds.is_empty() && !nf.kinds.contains(&node.kind) {
        return Some(Reject::Kind);
    }
    if (shipping && !node.ships_to_customers()) || (nf.require_ship && !node.ship) {
        return Some(if node.kind == NodeKind::Store && !node.ship_from_store {
            Reject::NoShipFromStore
        } else {
            Reject::CannotShip
        });
    }
    if nf.require_ship_from_store && node.kind == NodeKind::Store && !node.ship_from_store {
        return Some(Reject::NoShipFromStore);
    }
    if nf.require_pickup && !node.pickup {
        return Some(Reject::NoPickup);
    }
    if !nf.regions.is_empty() && !nf.regions.contains(&node.region) {
        return Some(Reject::Region);
    }
    if nf.max_distance_km > 0.0 {
        match km {
            None => return Some(Reject::DistanceUnknown),
            Some(km) if km > nf.max_distance_km => {
                return Some(Reject::TooFar {
                    km,
                    limit: nf.max_distance_km,
                });
            }
            _ => {}
        }
    }
    // Unlimited capacity (0) leaves more than any rule asks: a select
    // rather than a branch that nodes take at random.
    let left = if node.daily_capacity > 0 {
        i64::from(node.daily_capacity) - used
    } else {
        i64::MAX
    };
    if left <= 0 {
        return Some(Reject::CapacityExhausted {
            capacity: node.daily_capacity,
        });
    }
    if left < i64::from(nf.min_capacity_left) {
        return Some(Reject::CapacityBelow {
            left,
            min: nf.min_capacity_left,
        });
    }
    if !holding.any {
        return Some(Reject::NoStock);
    }
    // One shipment allowed and a partial plan of no use (the next rule is
    // tried, or the order held): only a node holding everything can take
    // part, and nothing else need be measured. A pickup order's store
    // stock was used before, when it could be; what is left ships whole.
    if super::whole_only(rule) && !holding.whole {
        return Some(Reject::NotWhole);
    }
    None
}

/// The lowest and highest raw value of each criterion slot over the
/// eligible nodes; an unknown measure (not finite) takes no part.
struct Range {
    lo: [f64; 6],
    hi: [f64; 6],
}

impl Range {
    fn new() -> Range {
        Range {
            lo: [f64::INFINITY; 6],
            hi: [f64::NEG_INFINITY; 6],
        }
    }

    /// Takes in one node's measures: all six slots, whatever the rule
    /// ranks by (a slot it does not use holds 0 and weighs 0), so that
    /// this unrolls into straight-line code.
    fn add(&mut self, parts: &[(f64, f64); 6]) {
        for (k, (raw, _)) in parts.iter().enumerate() {
            // Plain comparisons of numbers: `f64::min` and `max` pay for
            // NaN handling here.
            let finite = raw.is_finite();
            let for_lo = if finite { *raw } else { f64::INFINITY };
            let for_hi = if finite { *raw } else { f64::NEG_INFINITY };
            self.lo[k] = if for_lo < self.lo[k] {
                for_lo
            } else {
                self.lo[k]
            };
            self.hi[k] = if for_hi > self.hi[k] {
                for_hi
            } else {
                self.hi[k]
            };
        }
    }
}

/// Each eligible node's weighted parts and score from the range of each
/// criterion, over all six slots as [`Range::add`] does.
fn normalise(rule: &Rule, r: &Range, cands: &mut [Candidate]) {
    let (lo, hi) = (r.lo, r.hi);
    let mut best = [0.0; 6];
    let mut range = [0.0; 6];
    let mut weight = [0.0; 6];
    // Whether the nodes differ at all in a criterion (else each scores 0).
    let mut spread = [false; 6];
    for (k, (criterion, w)) in rule.ranking.iter().enumerate().take(6) {
        let (b, worst) = if lower_is_better(*criterion) {
            (lo[k], hi[k])
        } else {
            (hi[k], lo[k])
        };
        best[k] = b;
        range[k] = worst - b;
        spread[k] = range[k] != 0.0 && range[k].is_finite();
        weight[k] = *w;
    }
    for c in cands.iter_mut().filter(|c| c.reject.is_none()) {
        for k in 0..6 {
            let raw = c.parts[k].0;
            // An unknown measure (no coordinates) ranks as the worst.
            let norm = if !raw.is_finite() {
                1.0
            } else if !spread[k] {
                0.0
            } else {
                (raw - best[k]) / range[k]
            };
            let part = weight[k] * norm;
            c.parts[k].1 = part;
            c.score += part;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Holding;

    #[test]
    fn a_holding_reads_any_whole_and_depth_from_one_pass() {
        // Wants 2 of the first SKU, none of the second, 1 of the third.
        let demand = [2, 0, 1];
        let wanted = [-1, 0, -1];
        let h = Holding::of(&demand, &wanted, &[5, 7, 1]);
        assert!(h.any && h.whole);
        assert_eq!(h.depth, 3 + 7);
        let h = Holding::of(&demand, &wanted, &[1, 9, 0]);
        assert!(h.any && !h.whole, "some, not all");
        assert_eq!(h.depth, 9);
        // Stock of an unwanted SKU only is no stock for the order.
        let h = Holding::of(&demand, &wanted, &[0, 9, 0]);
        assert!(!h.any && !h.whole);
    }
}
