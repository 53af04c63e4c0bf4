use oms_kernel::{Tenant, Violations};
use oms_proto::common::NodeKind;
use oms_proto::inventory::Node;

/// Parses the node of a CreateNode request.
pub fn parse_new(node: Option<Node>, owner: &Tenant) -> Result<Node, Violations> {
    let Some(mut node) = node else {
        return Err(Violations::one("node", "is required"));
    };
    let mut v = Violations::new();
    v.check("node.node_id", super::check_node_id(&node.node_id));
    check_fields(&mut v, &node);
    node.name = format!("nodes/{}", node.node_id);
    node.owner_tenant = owner.to_string();
    node.shared_with_tenants.retain(|t| t != owner.as_str());
    v.into_result(node)
}

/// A node as `tenant` may see it. A depositor the node is shared with
/// sees itself alone among the tenants it is shared with: the depositors
/// of a 3PL warehouse do not learn of each other.
pub fn seen_by(mut node: Node, tenant: &Tenant) -> Node {
    if node.owner_tenant != tenant.as_str() {
        node.shared_with_tenants.retain(|t| t == tenant.as_str());
    }
    node
}

fn check_fields(v: &mut Violations, node: &Node) {
    match NodeKind::try_from(node.kind) {
        Ok(NodeKind::Unspecified) | Err(_) => v.add("node.kind", "choose a node kind"),
        Ok(_) => {}
    }
    if node.display_name.len() > 200 {
        v.add("node.display_name", "must be at most 200 characters");
    }
    if node.daily_capacity < 0 {
        v.add(
            "node.daily_capacity",
            "must not be negative (0 means unlimited)",
        );
    }
    if !node.cutoff_local_time.is_empty() && !is_hh_mm(&node.cutoff_local_time) {
        v.add("node.cutoff_local_time", "must be HH:MM (24-hour)");
    }
    if !node.time_zone.is_empty() && !super::expiry::is_time_zone(&node.time_zone) {
        v.add(
            "node.time_zone",
            "must be an IANA time zone such as Europe/Berlin or UTC",
        );
    }
    if let Some(a) = &node.address {
        oms_runtime::address::check_form(v, "node.address", a);
    }
    v.at_most("node.region", &node.region, 64);
    for (i, t) in node.shared_with_tenants.iter().enumerate() {
        if let Err(e) = Tenant::parse(t) {
            v.add(format!("node.shared_with_tenants[{i}]"), e);
        }
    }
    v.no_repeats("node.shared_with_tenants", &node.shared_with_tenants);
    let caps = node.capabilities.unwrap_or_default();
    if caps.ship_from_store && NodeKind::try_from(node.kind) != Ok(NodeKind::Store) {
        v.add(
            "node.capabilities.ship_from_store",
            "only stores ship from store",
        );
    }
}

fn is_hh_mm(s: &str) -> bool {
    let Some((h, m)) = s.split_once(':') else {
        return false;
    };
    h.len() == 2
        && m.len() == 2
        && h.parse::<u8>().is_ok_and(|h| h < 24)
        && m.parse::<u8>().is_ok_and(|m| m < 60)
}

/// Fields a node update may change.
pub const UPDATABLE: &[&str] = &[
    "display_name",
    "kind",
    "address",
    "capabilities",
    "capabilities.ship",
    "capabilities.pickup",
    "capabilities.ship_from_store",
    "daily_capacity",
    "cutoff_local_time",
    "time_zone",
    "enabled",
    "region",
    "priority",
    "shared_with_tenants",
];

/// Applies the fields of `update_mask` from `patch` to `current`.
pub fn apply_update(current: &mut Node, patch: Node, paths: &[String]) -> Result<(), Violations> {
    let mut v = Violations::new();
    if paths.is_empty() {
        v.add("update_mask", "name at least one field");
    }
    let given = patch.capabilities.unwrap_or_default();
    for p in paths {
        // One capability may change alone: before, only the whole
        // `capabilities` could, and turning pickup on meant sending ship
        // and ship_from_store again or losing them.
        let caps = &mut current.capabilities;
        match p.as_str() {
            "capabilities.ship" => caps.get_or_insert_default().ship = given.ship,
            "capabilities.pickup" => caps.get_or_insert_default().pickup = given.pickup,
            "capabilities.ship_from_store" => {
                caps.get_or_insert_default().ship_from_store = given.ship_from_store
            }
            "display_name" => current.display_name = patch.display_name.clone(),
            "kind" => current.kind = patch.kind,
            "address" => current.address = patch.address.clone(),
            "capabilities" => current.capabilities = patch.capabilities,
            "daily_capacity" => current.daily_capacity = patch.daily_capacity,
            "cutoff_local_time" => current.cutoff_local_time = patch.cutoff_local_time.clone(),
            "time_zone" => current.time_zone = patch.time_zone.clone(),
            "enabled" => current.enabled = patch.enabled,
            "region" => current.region = patch.region.clone(),
            "priority" => current.priority = patch.priority,
            "shared_with_tenants" => {
                current.shared_with_tenants = patch.shared_with_tenants.clone()
            }
            other => v.add(
                "update_mask",
                format!(
                    "{other:?} cannot be updated; updatable: {}",
                    UPDATABLE.join(", ")
                ),
            ),
        }
    }
    // Checked before the owner is dropped from the list, so that a field
    // path names the entry as the caller sent it.
    check_fields(&mut v, current);
    let owner = current.owner_tenant.clone();
    current.shared_with_tenants.retain(|t| *t != owner);
    v.into_result(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oms_proto::common::PostalAddress;
    use oms_proto::inventory::NodeCapabilities;

    fn node() -> Node {
        Node {
            node_id: "DC1".into(),
            kind: NodeKind::Warehouse as i32,
            cutoff_local_time: "15:30".into(),
            time_zone: "Europe/Berlin".into(),
            enabled: true,
            ..Default::default()
        }
    }

    #[test]
    fn parses_and_names() {
        let n = parse_new(Some(node()), &Tenant::parse("acme").unwrap()).unwrap();
        assert_eq!(n.name, "nodes/DC1");
        assert_eq!(n.owner_tenant, "acme");
    }

    #[test]
    fn refuses_bad_fields() {
        let mut n = node();
        n.kind = 0;
        n.cutoff_local_time = "25:00".into();
        n.time_zone = "Berlin".into();
        n.capabilities = Some(NodeCapabilities {
            ship_from_store: true,
            ..Default::default()
        });
        n.region = "r".repeat(65);
        n.address = Some(PostalAddress {
            country_code: "de".into(),
            ..Default::default()
        });
        n.shared_with_tenants = vec!["globex".into(), "acme".into(), "globex".into()];
        let err = parse_new(Some(n), &Tenant::parse("acme").unwrap()).unwrap_err();
        let fields: Vec<_> = err.0.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "node.kind",
                "node.cutoff_local_time",
                "node.time_zone",
                "node.address.country_code",
                "node.region",
                "node.shared_with_tenants[2]",
                "node.capabilities.ship_from_store"
            ]
        );
        // An update names the entry as the caller sent it, owner included.
        let mut current = node();
        current.owner_tenant = "acme".into();
        let patch = Node {
            shared_with_tenants: vec!["acme".into(), "globex".into(), "globex".into()],
            ..node()
        };
        let err = apply_update(&mut current, patch, &["shared_with_tenants".into()]).unwrap_err();
        assert_eq!(err.0[0].field, "node.shared_with_tenants[2]");
    }

    #[test]
    fn updates_only_named_fields() {
        let mut current = node();
        let patch = Node {
            enabled: false,
            display_name: "ignored".into(),
            ..node()
        };
        apply_update(&mut current, patch, &["enabled".into()]).unwrap();
        assert!(!current.enabled);
        assert_eq!(current.display_name, "");
        let err = apply_update(&mut current, node(), &["node_id".into()]).unwrap_err();
        assert_eq!(err.0[0].field, "update_mask");
    }

    #[test]
    fn one_capability_changes_alone() {
        let caps = |ship, pickup, ship_from_store| {
            Some(NodeCapabilities {
                ship,
                pickup,
                ship_from_store,
            })
        };
        let mut current = Node {
            kind: NodeKind::Store as i32,
            capabilities: caps(true, false, true),
            ..node()
        };
        let patch = Node {
            capabilities: caps(false, true, false),
            ..node()
        };
        apply_update(&mut current, patch, &["capabilities.pickup".into()]).unwrap();
        assert_eq!(current.capabilities, caps(true, true, true));
        let mut bare = node();
        apply_update(&mut bare, node(), &["enabled".into()]).unwrap();
        assert_eq!(bare.capabilities, None, "untouched unless named");
    }
}
