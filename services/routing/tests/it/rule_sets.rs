//! Drafts, validation at save time, activation, rollback.
use crate::{TENANT, rid, start};
use oms_proto::routing::{
    ActivateRuleSetRequest, CreateRuleSetRequest, Criterion, GetRuleSetRequest,
    ListRuleSetsRequest, NodeFilter, RankingCriterion, RollbackRuleSetRequest, Rule, RuleSet,
    RuleSetState, SplitMode, SplitPolicy, UpdateRuleSetRequest,
};
use oms_runtime::status;
use oms_testkit::authed;
use tonic::Code;

pub fn rule(id: &str, criterion: Criterion) -> Rule {
    Rule {
        rule_id: id.into(),
        ranking: vec![RankingCriterion {
            criterion: criterion as i32,
            weight: 1.0,
        }],
        ..Default::default()
    }
}

pub fn rule_set(name: &str, rules: Vec<Rule>) -> RuleSet {
    RuleSet {
        display_name: name.into(),
        rules,
        ..Default::default()
    }
}

#[tokio::test]
async fn contradictory_rules_are_refused_at_save_time_with_every_field() {
    let mut h = start().await;
    let mut bad = rule("a", Criterion::Distance);
    bad.ranking[0].weight = -2.0;
    bad.split_policy = Some(SplitPolicy {
        mode: SplitMode::MaxShipments as i32,
        max_shipments: 0,
        ..Default::default()
    });
    bad.node_filter = Some(NodeFilter {
        max_distance_km: -1.0,
        ..Default::default()
    });
    let err = h
        .client
        .create_rule_set(authed(
            TENANT,
            CreateRuleSetRequest {
                request_id: rid(),
                rule_set: Some(rule_set("bad", vec![bad])),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        status::fields(&err),
        [
            "rule_set.rules[0].node_filter.max_distance_km",
            "rule_set.rules[0].ranking[0].weight",
            "rule_set.rules[0].split_policy.max_shipments",
        ]
    );
    // Without request ids, each call names that too, with the rest.
    let err = h
        .client
        .create_rule_set(authed(TENANT, CreateRuleSetRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(status::fields(&err), ["request_id", "rule_set"]);
    let err = h
        .client
        .update_rule_set(authed(
            TENANT,
            UpdateRuleSetRequest {
                rule_set: Some(RuleSet {
                    name: "ruleSets/x".into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["state".into()],
                }),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        status::fields(&err),
        ["request_id", "rule_set.name", "update_mask.paths[0]"]
    );
    let err = h
        .client
        .activate_rule_set(authed(TENANT, ActivateRuleSetRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(status::fields(&err), ["request_id", "name"]);
    // Nothing was stored.
    let list = h
        .client
        .list_rule_sets(authed(TENANT, ListRuleSetsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(list.rule_sets.is_empty());
}

#[tokio::test]
async fn drafts_change_go_live_and_roll_back() {
    let mut h = start().await;
    let c = &mut h.client;
    let create = CreateRuleSetRequest {
        request_id: rid(),
        rule_set: Some(rule_set("v1", vec![rule("near", Criterion::Distance)])),
    };
    let v1 = c
        .create_rule_set(authed(TENANT, create.clone()))
        .await
        .unwrap()
        .into_inner()
        .rule_set
        .unwrap();
    assert_eq!(v1.state(), RuleSetState::Draft);
    assert_eq!(v1.version, 1);
    // A replay returns the same rule set, not a second one.
    let again = c
        .create_rule_set(authed(TENANT, create))
        .await
        .unwrap()
        .into_inner()
        .rule_set
        .unwrap();
    assert_eq!(again.name, v1.name);

    // No rule set is active yet: the built-in default applies.
    let err = c
        .get_rule_set(authed(
            TENANT,
            GetRuleSetRequest {
                name: "ruleSets/active".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(status::reason(&err), "NO_ACTIVE_RULE_SET");
    // The default itself reads by the name decisions give it.
    let builtin = c
        .get_rule_set(authed(
            TENANT,
            GetRuleSetRequest {
                name: "ruleSets/builtin-default".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .rule_set
        .unwrap();
    assert_eq!(builtin.name, "ruleSets/builtin-default");
    assert_eq!(builtin.rules[0].rule_id, "default");

    let mut patch = v1.clone();
    patch.rules = vec![rule("cheap", Criterion::ShippingCost)];
    let updated = c
        .update_rule_set(authed(
            TENANT,
            UpdateRuleSetRequest {
                request_id: rid(),
                rule_set: Some(patch),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["rules".into()],
                }),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .rule_set
        .unwrap();
    assert_eq!(updated.rules[0].rule_id, "cheap");
    assert_eq!(updated.display_name, "v1");

    let activate = |name: String| ActivateRuleSetRequest {
        request_id: rid(),
        name,
    };
    let live = c
        .activate_rule_set(authed(TENANT, activate(v1.name.clone())))
        .await
        .unwrap()
        .into_inner()
        .rule_set
        .unwrap();
    assert_eq!(live.state(), RuleSetState::Active);
    assert!(live.activate_time.is_some());

    // A live rule set no longer changes.
    let mut patch = live.clone();
    patch.display_name = "renamed".into();
    let err = c
        .update_rule_set(authed(
            TENANT,
            UpdateRuleSetRequest {
                request_id: rid(),
                rule_set: Some(patch),
                update_mask: None,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status::reason(&err), "RULE_SET_NOT_DRAFT");

    let v2 = c
        .create_rule_set(authed(
            TENANT,
            CreateRuleSetRequest {
                request_id: rid(),
                rule_set: Some(rule_set("v2", vec![rule("prio", Criterion::NodePriority)])),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .rule_set
        .unwrap();
    assert_eq!(v2.version, 2);
    c.activate_rule_set(authed(TENANT, activate(v2.name.clone())))
        .await
        .unwrap();
    let get = |name: &str| GetRuleSetRequest { name: name.into() };
    let first = c
        .get_rule_set(authed(TENANT, get(&v1.name)))
        .await
        .unwrap()
        .into_inner()
        .rule_set
        .unwrap();
    assert_eq!(first.state(), RuleSetState::Superseded);

    let back = c
        .rollback_rule_set(authed(TENANT, RollbackRuleSetRequest { request_id: rid() }))
        .await
        .unwrap()
        .into_inner()
        .rule_set
        .unwrap();
    assert_eq!(back.name, v1.name);
    let active = c
        .get_rule_set(authed(TENANT, get("ruleSets/active")))
        .await
        .unwrap()
        .into_inner()
        .rule_set
        .unwrap();
    assert_eq!(active.name, v1.name);
    let second = c
        .get_rule_set(authed(TENANT, get(&v2.name)))
        .await
        .unwrap()
        .into_inner()
        .rule_set
        .unwrap();
    assert_eq!(second.state(), RuleSetState::Superseded);
    // Nothing was live before v1.
    let err = c
        .rollback_rule_set(authed(TENANT, RollbackRuleSetRequest { request_id: rid() }))
        .await
        .unwrap_err();
    assert_eq!(status::reason(&err), "NOTHING_TO_ROLL_BACK");

    // Newest first, in pages.
    let page = c
        .list_rule_sets(authed(
            TENANT,
            ListRuleSetsRequest {
                page_size: 1,
                page_token: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.rule_sets[0].version, 2);
    let page = c
        .list_rule_sets(authed(
            TENANT,
            ListRuleSetsRequest {
                page_size: 1,
                page_token: page.next_page_token,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.rule_sets[0].version, 1);
    assert!(page.next_page_token.is_empty());

    // Another tenant sees none of it.
    let other = c
        .list_rule_sets(authed("globex", ListRuleSetsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(other.rule_sets.is_empty());
}
