//! Nodes and items.
use super::{Begin, Inventory};
use crate::domain::{item, node};
use crate::error::{Error, Result};
use crate::repo::{self, lock};
use chrono::Utc;
use oms_kernel::{
    PageSize, PageToken, Paging, RequestId, Tenant, Violations, parse_name, target_id,
};
use oms_proto::inventory::*;
use oms_runtime::time::to_timestamp;

fn mask(m: &Option<prost_types::FieldMask>) -> Vec<String> {
    m.as_ref().map(|m| m.paths.clone()).unwrap_or_default()
}

/// The id an update names in `{field}.name` or `{field}.{id_field}` (see
/// [`target_id`]), checked with the request id.
fn patch_target(
    request_id: &str,
    target: Option<(&str, &str)>,
    (field, id_field): (&str, &str),
    collection: &str,
) -> Result<String> {
    let target = match target {
        None => Err(Violations::one(field, "is required")),
        Some((name, id)) => {
            let fields = (&*format!("{field}.name"), &*format!("{field}.{id_field}"));
            target_id(name, id, collection, fields)
        }
    };
    Ok(RequestId::checked_with(request_id, target)?.1)
}

fn name_id<'a>(field: &str, name: &'a str, collection: &str) -> Result<&'a str> {
    parse_name(name, collection).map_err(|e| Violations::one(field, e).into())
}

pub async fn create_node(
    inv: &Inventory,
    tenant: &Tenant,
    req: CreateNodeRequest,
) -> Result<CreateNodeResponse> {
    let (_, mut node) =
        RequestId::checked_with(&req.request_id, node::parse_new(req.node.clone(), tenant))?;
    let (tx, rid) = match inv
        .begin(tenant, &req.request_id, "CreateNode", &req)
        .await?
    {
        Begin::Replay(r) => return Ok(r),
        Begin::Tx(tx, rid) => (tx, rid),
    };
    let mut tx = tx;
    let now = Utc::now();
    node.create_time = Some(to_timestamp(now));
    node.update_time = node.create_time;
    if !repo::nodes::insert(&mut tx, &node, now).await? {
        return Err(Error::AlreadyExists {
            reason: "NODE_EXISTS",
            name: node.name,
        });
    }
    inv.finish(tx, tenant, &rid, CreateNodeResponse { node: Some(node) })
        .await
}

pub async fn update_node(
    inv: &Inventory,
    tenant: &Tenant,
    req: UpdateNodeRequest,
) -> Result<UpdateNodeResponse> {
    let id = patch_target(
        &req.request_id,
        req.node
            .as_ref()
            .map(|n| (n.name.as_str(), n.node_id.as_str())),
        ("node", "node_id"),
        "nodes",
    )?;
    let patch = req.node.clone().unwrap_or_default(); // there is one: it names its target
    let paths = mask(&req.update_mask);
    let (mut tx, rid) = match inv
        .begin(tenant, &req.request_id, "UpdateNode", &req)
        .await?
    {
        Begin::Replay(r) => return Ok(r),
        Begin::Tx(tx, rid) => (tx, rid),
    };
    let Some(mut current) = repo::nodes::get_owned_for_update(&mut tx, tenant, &id).await? else {
        return Err(
            match repo::nodes::get_visible(&mut *tx, tenant, &id).await? {
                Some(_) => Error::PermissionDenied(format!(
                    "nodes/{id} is shared with you; only its owner changes it"
                )),
                None => Error::not_found("node", format!("nodes/{id}")),
            },
        );
    };
    let was_enabled = current.enabled;
    let was_shared = current.shared_with_tenants.clone();
    node::apply_update(&mut current, patch, &paths)?;
    let now = Utc::now();
    current.update_time = Some(to_timestamp(now));
    repo::nodes::update(&mut tx, &current, now).await?;
    if was_enabled != current.enabled || was_shared != current.shared_with_tenants {
        // Which nodes count in the network changed: the gates of every
        // tenant that may use the node, or has stock there, are rebuilt
        // (exclusively) on their next use. Each one's gate lock is held
        // (shared) first, as for any change of its gate, so that no
        // rebuild reads the node before this commits: another tenant's (a
        // shared node) would otherwise rebuild at once from the node as it
        // was, and keep that. Not only those with stock: a first receipt
        // there, not committed yet, read the node as it was too.
        let mut tenants: std::collections::BTreeSet<String> = repo::nodes::tenants_at(&mut tx, &id)
            .await?
            .into_iter()
            .collect();
        tenants.insert(tenant.as_str().to_owned());
        tenants.extend(was_shared.iter().cloned());
        tenants.extend(current.shared_with_tenants.iter().cloned());
        for t in tenants {
            if let Ok(t) = Tenant::parse(&t) {
                lock::shared(&mut tx, &t).await?;
                super::reconcile::invalidate(inv, &t).await?;
                // Each tenant's feeds say which of its figures changed
                // (channel connectors publish from them).
                let skus = repo::rules::skus_at(&mut tx, &t, &id).await?;
                if !skus.is_empty() {
                    let usable = current.owner_tenant == t.as_str()
                        || current.shared_with_tenants.iter().any(|s| s == t.as_str());
                    let changed = NodeChanged {
                        node_id: id.clone(),
                        enabled: current.enabled,
                        usable,
                        skus,
                    };
                    let kind = inventory_event::Kind::NodeChanged(changed);
                    super::emit(&mut tx, &t, &format!("nodes/{id}"), rid.as_str(), kind).await?;
                }
            }
        }
    }
    inv.finish(
        tx,
        tenant,
        &rid,
        UpdateNodeResponse {
            node: Some(current),
        },
    )
    .await
}

pub async fn get_node(
    inv: &Inventory,
    tenant: &Tenant,
    req: GetNodeRequest,
) -> Result<GetNodeResponse> {
    let id = name_id("name", &req.name, "nodes")?;
    repo::nodes::get_visible(&inv.pool, tenant, id)
        .await?
        .map(|n| GetNodeResponse {
            node: Some(node::seen_by(n, tenant)),
        })
        .ok_or_else(|| Error::not_found("node", req.name.clone()))
}

pub async fn list_nodes(
    inv: &Inventory,
    tenant: &Tenant,
    req: ListNodesRequest,
) -> Result<ListNodesResponse> {
    let mut v = Violations::new();
    let size = v.check("page_size", PageSize::parse(req.page_size, 100, 1000));
    let capability = req.capability.as_str();
    if !["", "ship", "pickup", "ship_from_store"].contains(&capability) {
        v.add("capability", "one of ship, pickup, ship_from_store");
    }
    for (i, k) in req.kinds.iter().enumerate() {
        use oms_proto::common::NodeKind;
        if !matches!(NodeKind::try_from(*k), Ok(k) if k != NodeKind::Unspecified) {
            v.add(format!("kinds[{i}]"), "unknown node kind");
        }
    }
    let hash = oms_kernel::fingerprint(&ListNodesRequest {
        page_size: 0,
        page_token: String::new(),
        ..req.clone()
    });
    let after = v
        .check(
            "page_token",
            PageToken::<String>::decode(&req.page_token, hash),
        )
        .flatten();
    let size = v.into_result(size)?.unwrap_or(PageSize(100));
    // Region and capability filter documents; read pages until one is full.
    let mut nodes = Vec::new();
    let mut cursor = after;
    let limit = i64::from(size.get());
    loop {
        let filter = repo::nodes::ListFilter {
            kinds: req.kinds.clone(),
            enabled_only: req.enabled_only,
            after: cursor.clone(),
            limit,
        };
        let batch = repo::nodes::list(&inv.pool, tenant, &filter).await?;
        // More may follow the page when the batch was full or the page
        // filled before the batch's end.
        let mut more = batch.len() as i64 == limit;
        let last = batch.len().saturating_sub(1);
        for (i, n) in batch.into_iter().enumerate() {
            cursor = Some(n.node_id.clone());
            let caps = n.capabilities.unwrap_or_default();
            let cap_ok = match capability {
                "ship" => caps.ship,
                "pickup" => caps.pickup,
                "ship_from_store" => caps.ship_from_store,
                _ => true,
            };
            if cap_ok && (req.region.is_empty() || n.region == req.region) {
                nodes.push(node::seen_by(n, tenant));
                if nodes.len() as i64 == limit {
                    more |= i < last;
                    break;
                }
            }
        }
        let full = nodes.len() as i64 == limit;
        if !more || full {
            let next_page_token = match (&cursor, full && more) {
                (Some(c), true) => PageToken::encode(c.clone(), hash),
                _ => String::new(),
            };
            return Ok(ListNodesResponse {
                nodes,
                next_page_token,
            });
        }
    }
}

pub async fn create_item(
    inv: &Inventory,
    tenant: &Tenant,
    req: CreateItemRequest,
) -> Result<CreateItemResponse> {
    let (_, mut it) = RequestId::checked_with(&req.request_id, item::parse_new(req.item.clone()))?;
    let (mut tx, rid) = match inv
        .begin(tenant, &req.request_id, "CreateItem", &req)
        .await?
    {
        Begin::Replay(r) => return Ok(r),
        Begin::Tx(tx, rid) => (tx, rid),
    };
    let now = Utc::now();
    it.create_time = Some(to_timestamp(now));
    it.update_time = it.create_time;
    if !repo::items::insert(&mut tx, tenant, &it, now).await? {
        return Err(Error::AlreadyExists {
            reason: "ITEM_EXISTS",
            name: it.name,
        });
    }
    inv.finish(tx, tenant, &rid, CreateItemResponse { item: Some(it) })
        .await
}

pub async fn update_item(
    inv: &Inventory,
    tenant: &Tenant,
    req: UpdateItemRequest,
) -> Result<UpdateItemResponse> {
    let sku = patch_target(
        &req.request_id,
        req.item.as_ref().map(|i| (i.name.as_str(), i.sku.as_str())),
        ("item", "sku"),
        "items",
    )?;
    let patch = req.item.clone().unwrap_or_default(); // there is one: it names its target
    let paths = mask(&req.update_mask);
    inv.retrying(tenant, || async {
        let (mut tx, rid) = match inv
            .begin(tenant, &req.request_id, "UpdateItem", &req)
            .await?
        {
            Begin::Replay(r) => return Ok(r),
            Begin::Tx(tx, rid) => (tx, rid),
        };
        let Some(mut current) =
            repo::items::get(&mut *tx, tenant, &sku, repo::items::Lock::Update).await?
        else {
            return Err(Error::not_found("item", format!("items/{sku}")));
        };
        let before = current.clone();
        item::apply_update(&mut current, &patch, &paths)?;
        if item::tracking_changed(&before, &current) {
            refuse_stranding(&mut tx, tenant, &before, &current).await?;
        }
        let now = Utc::now();
        current.update_time = Some(to_timestamp(now));
        repo::items::update(&mut tx, tenant, &current, now).await?;
        if current.min_shelf_life_days != before.min_shelf_life_days {
            super::lot_expiry::restate_item(inv, &mut tx, tenant, &current, rid.as_str()).await?;
        }
        inv.finish(
            tx,
            tenant,
            &rid,
            UpdateItemResponse {
                item: Some(current),
            },
        )
        .await
    })
    .await
}

/// Refuses a tracking change that would put units on hand out of every
/// movement's reach ([`item::strands`]). The item is locked, so no
/// movement is under way.
async fn refuse_stranding(
    tx: &mut sqlx::PgConnection,
    tenant: &Tenant,
    before: &Item,
    after: &Item,
) -> Result<()> {
    let of_item = repo::stock::LevelFilter {
        node: None,
        skus: std::slice::from_ref(&after.sku),
        withdraw_before: None,
    };
    let mut stranded: Vec<String> = repo::stock::levels(&mut *tx, tenant, &of_item, None, i64::MAX)
        .await?
        .into_iter()
        .filter(|l| l.on_hand != 0 && item::strands(before, after, &l.lot))
        .map(|l| match l.lot.as_str() {
            "" => format!("{} at {}", l.on_hand, l.node_id),
            lot => format!("{} at {} in lot {lot}", l.on_hand, l.node_id),
        })
        .collect();
    // Units on the way arrive by the item's tracking too.
    for (lot, units) in repo::transfers::on_the_way_by_lot(&mut *tx, tenant, &after.sku).await? {
        if item::strands(before, after, &lot) {
            stranded.push(match lot.as_str() {
                "" => format!("{units} in transit"),
                lot => format!("{units} in transit in lot {lot}"),
            });
        }
    }
    if stranded.is_empty() {
        return Ok(());
    }
    Err(Error::precondition(
        "ITEM_HAS_STOCK",
        after.name.clone(),
        format!(
            "{} has units on hand or on the way ({}) that no movement could reach under the new tracking; count them to zero, change the tracking, then count or receive them again",
            after.sku,
            stranded.join(", ")
        ),
    ))
}

pub async fn get_item(
    inv: &Inventory,
    tenant: &Tenant,
    req: GetItemRequest,
) -> Result<GetItemResponse> {
    let sku = name_id("name", &req.name, "items")?;
    repo::items::get(&inv.pool, tenant, sku, repo::items::Lock::None)
        .await?
        .map(|i| GetItemResponse { item: Some(i) })
        .ok_or_else(|| Error::not_found("item", req.name.clone()))
}

pub async fn list_items(
    inv: &Inventory,
    tenant: &Tenant,
    req: ListItemsRequest,
) -> Result<ListItemsResponse> {
    let mut v = Violations::new();
    let paging = Paging::<String>::parse(&mut v, req.page_size, &req.page_token, (100, 1000), 0);
    v.into_result(())?;
    let rows =
        repo::items::list(&inv.pool, tenant, paging.after.as_deref(), paging.fetch()).await?;
    let (items, next_page_token) = paging.page(rows, |i| i.sku.clone());
    Ok(ListItemsResponse {
        items,
        next_page_token,
    })
}
