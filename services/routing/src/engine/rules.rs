//! Rule sets: validation when they are saved (so a bad rule never reaches
//! planning) and compilation into the form the engine evaluates.
use oms_kernel::{Violations, parse_name};
use oms_proto::common::{DeliveryMethod, NodeKind, ServiceLevel};
use oms_proto::routing as pb;
use pb::{Criterion, PickupFallback, SplitMode, UnfillableAction};
use std::collections::BTreeSet;

/// Most rules in one rule set.
pub const MAX_RULES: usize = 100;

/// A rule ready to evaluate.
#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    pub channels: Vec<String>,
    pub delivery_methods: Vec<DeliveryMethod>,
    pub service_levels: Vec<ServiceLevel>,
    pub min_priority: Option<i32>,
    pub countries: Vec<String>,
    pub regions: Vec<String>,
    pub nodes: NodeFilter,
    pub ranking: Vec<(Criterion, f64)>,
    /// At most this many shipping nodes.
    pub max_shipments: usize,
    pub line_split: bool,
    /// Minimum value of each shipment of a split order, when the order is in
    /// `min_value_currency`.
    pub min_shipment_value: i64,
    pub min_value_currency: String,
    pub when_unfillable: UnfillableAction,
    pub pickup_fallback: PickupFallback,
}

/// Which nodes a rule may use.
#[derive(Debug, Clone, Default)]
pub struct NodeFilter {
    pub kinds: Vec<NodeKind>,
    pub require_ship: bool,
    pub require_pickup: bool,
    pub require_ship_from_store: bool,
    pub regions: Vec<String>,
    /// 0: no limit.
    pub max_distance_km: f64,
    pub min_capacity_left: i32,
    pub exclude: Vec<String>,
}

/// Rules in order, first match wins.
#[derive(Debug, Clone)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
}

/// The rules used when a tenant has never activated a rule set: every
/// enabled node that ships, nearest first, split freely, backorder what
/// cannot be filled.
pub fn builtin_default() -> pb::RuleSet {
    pb::RuleSet {
        display_name: "Built-in default: nearest node, split allowed".into(),
        rules: vec![pb::Rule {
            rule_id: "default".into(),
            display_name: "Nearest node that has the stock".into(),
            order_filter: Some(pb::OrderFilter::default()),
            node_filter: Some(pb::NodeFilter::default()),
            ranking: vec![
                pb::RankingCriterion {
                    criterion: Criterion::Distance as i32,
                    weight: 1.0,
                },
                pb::RankingCriterion {
                    criterion: Criterion::NodePriority as i32,
                    weight: 0.1,
                },
            ],
            split_policy: Some(pb::SplitPolicy {
                mode: SplitMode::Unspecified as i32,
                max_shipments: 0,
                allow_line_split: false,
                min_shipment_value: None,
            }),
            when_unfillable: UnfillableAction::PartialBackorder as i32,
            pickup_fallback: PickupFallback::Transfer as i32,
        }],
        ..Default::default()
    }
}

fn known<E: TryFrom<i32>>(v: i32) -> Option<E> {
    E::try_from(v).ok()
}

fn is_rule_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Checks a rule set as a client sent it; `prefix` is the field path of the
/// rule set in the request (`rule_set`).
pub fn validate(rs: &pb::RuleSet, prefix: &str) -> Violations {
    let mut v = Violations::new();
    if rs.display_name.chars().count() > 200 {
        v.add(format!("{prefix}.display_name"), "at most 200 characters");
    }
    if rs.rules.is_empty() {
        v.add(format!("{prefix}.rules"), "at least one rule is required");
    }
    if rs.rules.len() > MAX_RULES {
        v.add(
            format!("{prefix}.rules"),
            format!("at most {MAX_RULES} rules"),
        );
    }
    let mut ids = BTreeSet::new();
    // A rule that matches every order and never falls through ends the
    // list: anything after it could never be used.
    let mut terminal: Option<&str> = None;
    for (i, r) in rs.rules.iter().enumerate() {
        let f = format!("{prefix}.rules[{i}]");
        if let Some(t) = terminal {
            v.add(
                &f,
                format!(
                    "unreachable: rule {t:?} before it matches every order and never falls through to the next rule"
                ),
            );
        }
        if !is_rule_id(&r.rule_id) {
            v.add(
                format!("{f}.rule_id"),
                "required: 1 to 63 letters, digits, '-' or '_'",
            );
        } else if !ids.insert(r.rule_id.as_str()) {
            v.add(format!("{f}.rule_id"), "duplicate rule id in this rule set");
        }
        v.at_most(format!("{f}.display_name"), &r.display_name, 200);
        let of = r.order_filter.clone().unwrap_or_default();
        check_order_filter(&mut v, &format!("{f}.order_filter"), &of);
        check_node_filter(
            &mut v,
            &format!("{f}.node_filter"),
            &r.node_filter.clone().unwrap_or_default(),
        );
        check_ranking(&mut v, &f, &r.ranking);
        check_split(
            &mut v,
            &format!("{f}.split_policy"),
            &r.split_policy.clone().unwrap_or_default(),
        );
        let unfillable = known::<UnfillableAction>(r.when_unfillable);
        if unfillable.is_none() {
            v.add(format!("{f}.when_unfillable"), "unknown action");
        }
        if known::<PickupFallback>(r.pickup_fallback).is_none() {
            v.add(format!("{f}.pickup_fallback"), "unknown fallback");
        }
        let matches_all = of == pb::OrderFilter::default();
        let falls_through = matches!(
            unfillable,
            Some(UnfillableAction::Unspecified | UnfillableAction::NextRule)
        );
        if terminal.is_none() && matches_all && !falls_through {
            terminal = Some(r.rule_id.as_str());
        }
    }
    v
}

fn check_order_filter(v: &mut Violations, f: &str, of: &pb::OrderFilter) {
    for (i, c) in of.channels.iter().enumerate() {
        if let Err(e) = parse_name(c, "channels") {
            v.add(format!("{f}.channels[{i}]"), e);
        }
    }
    for (i, d) in of.delivery_methods.iter().enumerate() {
        if !matches!(
            known::<DeliveryMethod>(*d),
            Some(DeliveryMethod::Ship | DeliveryMethod::Pickup)
        ) {
            v.add(
                format!("{f}.delivery_methods[{i}]"),
                "must be DELIVERY_METHOD_SHIP or DELIVERY_METHOD_PICKUP",
            );
        }
    }
    for (i, s) in of.service_levels.iter().enumerate() {
        if matches!(
            known::<ServiceLevel>(*s),
            None | Some(ServiceLevel::Unspecified)
        ) {
            v.add(format!("{f}.service_levels[{i}]"), "unknown service level");
        }
    }
    for (i, c) in of.destination_countries.iter().enumerate() {
        v.check(
            format!("{f}.destination_countries[{i}]"),
            oms_kernel::check_country_code(c),
        );
    }
    for (i, r) in of.destination_regions.iter().enumerate() {
        if r.trim().is_empty() {
            v.add(format!("{f}.destination_regions[{i}]"), "must not be empty");
        }
        // An address's region is at most as long.
        v.at_most(
            format!("{f}.destination_regions[{i}]"),
            r,
            oms_runtime::address::MAX_TEXT,
        );
    }
    v.no_repeats(&format!("{f}.channels"), &of.channels);
    v.no_repeats(
        &format!("{f}.destination_countries"),
        &of.destination_countries,
    );
    v.no_repeats(&format!("{f}.destination_regions"), &of.destination_regions);
}

fn check_node_filter(v: &mut Violations, f: &str, nf: &pb::NodeFilter) {
    for (i, k) in nf.kinds.iter().enumerate() {
        if matches!(known::<NodeKind>(*k), None | Some(NodeKind::Unspecified)) {
            v.add(format!("{f}.kinds[{i}]"), "unknown node kind");
        }
    }
    if !nf.max_distance_km.is_finite() || nf.max_distance_km < 0.0 {
        v.add(
            format!("{f}.max_distance_km"),
            "must be zero (no limit) or a positive distance",
        );
    }
    if nf.min_capacity_left < 0 {
        v.add(format!("{f}.min_capacity_left"), "must be zero or more");
    }
    for (i, r) in nf.regions.iter().enumerate() {
        if r.trim().is_empty() {
            v.add(format!("{f}.regions[{i}]"), "must not be empty");
        }
        // A node's region is at most as long.
        v.at_most(format!("{f}.regions[{i}]"), r, 64);
    }
    for (i, n) in nf.exclude_node_ids.iter().enumerate() {
        v.check(
            format!("{f}.exclude_node_ids[{i}]"),
            oms_kernel::check_id(n),
        );
    }
    v.no_repeats(&format!("{f}.regions"), &nf.regions);
    v.no_repeats(&format!("{f}.exclude_node_ids"), &nf.exclude_node_ids);
    let kinds: Vec<NodeKind> = nf.kinds.iter().filter_map(|k| known(*k)).collect();
    if nf.require_ship_from_store && !kinds.is_empty() && !kinds.contains(&NodeKind::Store) {
        v.add(
            format!("{f}.require_ship_from_store"),
            "contradicts kinds: ship-from-store applies to stores, which the kinds exclude",
        );
    }
}

fn check_ranking(v: &mut Violations, f: &str, ranking: &[pb::RankingCriterion]) {
    let mut seen = BTreeSet::new();
    for (i, c) in ranking.iter().enumerate() {
        let cf = format!("{f}.ranking[{i}]");
        match known::<Criterion>(c.criterion) {
            None | Some(Criterion::Unspecified) => {
                v.add(format!("{cf}.criterion"), "unknown criterion");
            }
            Some(k) => {
                if !seen.insert(k as i32) {
                    v.add(
                        format!("{cf}.criterion"),
                        "listed twice; give each criterion one weight",
                    );
                }
            }
        }
        if !c.weight.is_finite() || c.weight < 0.0 {
            v.add(
                format!("{cf}.weight"),
                "must be a finite number, zero or more",
            );
        }
    }
}

fn check_split(v: &mut Violations, f: &str, sp: &pb::SplitPolicy) {
    match known::<SplitMode>(sp.mode) {
        None => v.add(format!("{f}.mode"), "unknown split mode"),
        Some(SplitMode::NoSplit) => {
            if sp.max_shipments > 1 {
                v.add(
                    format!("{f}.max_shipments"),
                    "contradicts mode SPLIT_MODE_NO_SPLIT (one shipment)",
                );
            }
            if sp.allow_line_split {
                v.add(
                    format!("{f}.allow_line_split"),
                    "contradicts mode SPLIT_MODE_NO_SPLIT: a line cannot be spread over one node",
                );
            }
        }
        Some(SplitMode::MaxShipments) => {
            if sp.max_shipments < 1 {
                v.add(
                    format!("{f}.max_shipments"),
                    "must be at least 1 for SPLIT_MODE_MAX_SHIPMENTS",
                );
            }
        }
        Some(SplitMode::Unspecified) => {
            if sp.max_shipments != 0 {
                v.add(
                    format!("{f}.max_shipments"),
                    "set mode SPLIT_MODE_MAX_SHIPMENTS to limit shipments",
                );
            }
        }
    }
    if let Some(m) = &sp.min_shipment_value {
        if m.amount_minor < 0 {
            v.add(
                format!("{f}.min_shipment_value.amount_minor"),
                "must be zero or more",
            );
        }
        if m.amount_minor > 0
            && (m.currency_code.len() != 3
                || !m.currency_code.chars().all(|c| c.is_ascii_uppercase()))
        {
            v.add(
                format!("{f}.min_shipment_value.currency_code"),
                "must be an ISO 4217 code (\"EUR\")",
            );
        }
    }
}

/// Compiles a rule set that passed [`validate`].
pub fn compile(rs: &pb::RuleSet) -> RuleSet {
    RuleSet {
        rules: rs.rules.iter().map(compile_rule).collect(),
    }
}

fn compile_rule(r: &pb::Rule) -> Rule {
    let of = r.order_filter.clone().unwrap_or_default();
    let nf = r.node_filter.clone().unwrap_or_default();
    let sp = r.split_policy.clone().unwrap_or_default();
    let max_shipments = match known::<SplitMode>(sp.mode) {
        Some(SplitMode::NoSplit) => 1,
        Some(SplitMode::MaxShipments) => sp.max_shipments.max(1) as usize,
        _ => usize::MAX,
    };
    let min = sp.min_shipment_value.unwrap_or_default();
    Rule {
        id: r.rule_id.clone(),
        channels: of.channels,
        delivery_methods: of
            .delivery_methods
            .iter()
            .filter_map(|d| known(*d))
            .collect(),
        service_levels: of.service_levels.iter().filter_map(|d| known(*d)).collect(),
        min_priority: of.min_priority,
        countries: of.destination_countries,
        regions: of.destination_regions,
        nodes: NodeFilter {
            kinds: nf.kinds.iter().filter_map(|k| known(*k)).collect(),
            require_ship: nf.require_ship,
            require_pickup: nf.require_pickup,
            require_ship_from_store: nf.require_ship_from_store,
            regions: nf.regions,
            max_distance_km: nf.max_distance_km,
            min_capacity_left: nf.min_capacity_left,
            exclude: nf.exclude_node_ids,
        },
        ranking: r
            .ranking
            .iter()
            .filter_map(|c| known(c.criterion).map(|k| (k, c.weight)))
            .collect(),
        max_shipments,
        line_split: sp.allow_line_split && max_shipments > 1,
        min_shipment_value: min.amount_minor,
        min_value_currency: min.currency_code,
        when_unfillable: known(r.when_unfillable).unwrap_or_default(),
        pickup_fallback: known(r.pickup_fallback).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(id: &str) -> pb::Rule {
        pb::Rule {
            rule_id: id.into(),
            ..Default::default()
        }
    }

    fn fields(v: &Violations) -> Vec<String> {
        v.0.iter().map(|x| x.field.clone()).collect()
    }

    #[test]
    fn the_builtin_default_is_valid() {
        assert!(validate(&builtin_default(), "rule_set").is_empty());
    }

    #[test]
    fn refuses_negative_weights_zero_split_limits_and_contradictions() {
        let mut r = rule("a");
        r.ranking = vec![pb::RankingCriterion {
            criterion: Criterion::Distance as i32,
            weight: -1.0,
        }];
        r.split_policy = Some(pb::SplitPolicy {
            mode: SplitMode::MaxShipments as i32,
            max_shipments: 0,
            ..Default::default()
        });
        let mut b = rule("b");
        b.split_policy = Some(pb::SplitPolicy {
            mode: SplitMode::NoSplit as i32,
            allow_line_split: true,
            ..Default::default()
        });
        b.node_filter = Some(pb::NodeFilter {
            max_distance_km: -5.0,
            exclude_node_ids: vec!["DC1".into(), "bad id!".into(), String::new()],
            ..Default::default()
        });
        let v = validate(
            &pb::RuleSet {
                rules: vec![r, b, rule("a")],
                ..Default::default()
            },
            "rule_set",
        );
        assert_eq!(
            fields(&v),
            [
                "rule_set.rules[0].ranking[0].weight",
                "rule_set.rules[0].split_policy.max_shipments",
                "rule_set.rules[1].node_filter.max_distance_km",
                "rule_set.rules[1].node_filter.exclude_node_ids[1]",
                "rule_set.rules[1].node_filter.exclude_node_ids[2]",
                "rule_set.rules[1].split_policy.allow_line_split",
                "rule_set.rules[2].rule_id",
            ]
        );
    }

    #[test]
    fn a_catch_all_rule_that_never_falls_through_makes_later_rules_unreachable() {
        let mut all = rule("all");
        all.when_unfillable = UnfillableAction::Hold as i32;
        let v = validate(
            &pb::RuleSet {
                rules: vec![all, rule("later")],
                ..Default::default()
            },
            "rule_set",
        );
        assert_eq!(fields(&v), ["rule_set.rules[1]"]);
        assert!(v.0[0].description.contains("unreachable"));

        // Falling through keeps the next rule reachable.
        let v = validate(
            &pb::RuleSet {
                rules: vec![rule("all"), rule("later")],
                ..Default::default()
            },
            "rule_set",
        );
        assert!(v.is_empty(), "{v:?}");
    }

    #[test]
    fn an_empty_rule_set_and_duplicate_criteria_are_refused() {
        let v = validate(&pb::RuleSet::default(), "rule_set");
        assert_eq!(fields(&v), ["rule_set.rules"]);
        let mut r = rule("a");
        let c = pb::RankingCriterion {
            criterion: Criterion::ShippingCost as i32,
            weight: 1.0,
        };
        r.ranking = vec![c, c];
        let v = validate(
            &pb::RuleSet {
                rules: vec![r],
                ..Default::default()
            },
            "rule_set",
        );
        assert_eq!(fields(&v), ["rule_set.rules[0].ranking[1].criterion"]);
    }

    #[test]
    fn filters_are_sets_of_bounded_values() {
        let mut r = rule("a");
        r.display_name = "d".repeat(201);
        r.order_filter = Some(pb::OrderFilter {
            channels: vec!["channels/web".into(), "channels/web".into()],
            destination_countries: vec!["DE".into(), "AT".into(), "DE".into()],
            destination_regions: vec!["r".repeat(501)],
            ..Default::default()
        });
        r.node_filter = Some(pb::NodeFilter {
            regions: vec!["r".repeat(65)],
            exclude_node_ids: vec!["DC1".into(), "DC1".into()],
            ..Default::default()
        });
        let v = validate(
            &pb::RuleSet {
                rules: vec![r],
                ..Default::default()
            },
            "rule_set",
        );
        assert_eq!(
            fields(&v),
            [
                "rule_set.rules[0].display_name",
                "rule_set.rules[0].order_filter.destination_regions[0]",
                "rule_set.rules[0].order_filter.channels[1]",
                "rule_set.rules[0].order_filter.destination_countries[2]",
                "rule_set.rules[0].node_filter.regions[0]",
                "rule_set.rules[0].node_filter.exclude_node_ids[1]",
            ]
        );
        assert_eq!(v.0[3].description, "repeats destination_countries[0] (DE)");
    }
}
