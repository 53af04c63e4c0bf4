//! Available-to-promise, computed from the record, and its change feed.
use super::Inventory;
use crate::domain::availability::{Figures, among, empty_at};
use crate::domain::{check_node_id, check_source};
use crate::error::Result;
use crate::repo;
use futures::{Stream, StreamExt};
use oms_kernel::{Paging, Tenant, Violations, parse_name};
use oms_proto::common::EventMeta;
use oms_proto::inventory::*;
use oms_runtime::outbox::{self, Cursor};
use prost::Message;
use sqlx::PgConnection;
use std::collections::BTreeMap;

const MAX_SKUS: usize = 1000;

#[derive(Debug, Clone)]
enum Scope {
    Network,
    Node(Vec<String>),
    Channel(String),
}

/// On-hand (and its expired part) and holds of these SKUs, as recorded:
/// at every node, or at `node` only (its holds, not the network's).
pub(crate) async fn stock_and_holds(
    db: &mut PgConnection,
    tenant: &Tenant,
    skus: &[String],
    node: Option<&str>,
) -> Result<Figures> {
    let mut f = Figures::default();
    f.add_stock(repo::stock::on_hand(&mut *db, tenant, skus, node).await?);
    for (sku, node, q) in repo::reservations::held(&mut *db, tenant, skus, node).await? {
        f.held.insert((sku, node), q);
    }
    Ok(f)
}

/// Which backorders a figure keeps units for.
#[derive(Clone, Copy, Default)]
struct Kept<'a> {
    /// Counted, not taken out of `available`.
    before: bool,
    /// A source whose own are not counted (empty: none).
    except: &'a str,
}

async fn figures(
    inv: &Inventory,
    tenant: &Tenant,
    skus: &[String],
    scope: &Scope,
    except: &str,
) -> Result<Figures> {
    let mut f = stock_and_holds(&mut *inv.pool.acquire().await?, tenant, skus, None).await?;
    // Node figures leave backorders out: routing reads them at every plan,
    // and need not pay for the query.
    if !matches!(scope, Scope::Node(_)) {
        f.add_backorders(repo::backorders::of(&inv.pool, tenant, skus, except).await?);
    }
    f.safety = repo::rules::safety(&inv.pool, tenant, skus).await?;
    f.add_on_the_way(repo::transfers::on_the_way(&inv.pool, tenant, skus).await?);
    f.add_expected_inbound(repo::inbound::expected(&inv.pool, tenant, skus).await?);
    f.enabled = repo::nodes::enabled_ids(&inv.pool, tenant)
        .await?
        .into_iter()
        .collect();
    Ok(f)
}

async fn compute(
    inv: &Inventory,
    tenant: &Tenant,
    skus: &[String],
    scope: &Scope,
    kept: Kept<'_>,
) -> Result<Vec<Availability>> {
    let f = figures(inv, tenant, skus, scope, kept.except).await?;
    let rule = match scope {
        Scope::Channel(c) => repo::rules::channel_rule(&inv.pool, tenant, c).await?,
        _ => None,
    };
    Ok(skus
        .iter()
        .flat_map(|sku| match scope {
            Scope::Network => vec![f.for_network(sku, kept.before)],
            Scope::Node(only) => f.per_node(sku, only),
            Scope::Channel(c) => vec![f.for_channel(sku, c, rule.as_ref(), kept.before)],
        })
        .collect())
}

fn parse_scope(v: &mut Violations, scope: i32, node_ids: &[String], channel: &str) -> Scope {
    for (i, n) in node_ids.iter().enumerate() {
        v.check(format!("node_ids[{i}]"), check_node_id(n));
    }
    // Unset, the scope is the one the request names: a channel or nodes
    // given under another scope would otherwise be ignored silently.
    let scope = match AvailabilityScope::try_from(scope) {
        Ok(AvailabilityScope::Unspecified) if !channel.is_empty() => AvailabilityScope::Channel,
        Ok(AvailabilityScope::Unspecified) if !node_ids.is_empty() => AvailabilityScope::Node,
        Ok(AvailabilityScope::Unspecified) => AvailabilityScope::Network,
        Ok(s) => s,
        Err(_) => {
            v.add("scope", "unknown scope");
            return Scope::Network;
        }
    };
    if !channel.is_empty() && scope != AvailabilityScope::Channel {
        v.add("channel", "applies to channel scope only");
    }
    if !node_ids.is_empty() && scope != AvailabilityScope::Node {
        v.add("node_ids", "apply to node scope only");
    }
    match scope {
        AvailabilityScope::Node => Scope::Node(node_ids.to_vec()),
        AvailabilityScope::Channel => {
            v.check("channel", parse_name(channel, "channels"));
            Scope::Channel(channel.to_owned())
        }
        _ => Scope::Network,
    }
}

/// Refuses nodes the tenant cannot see, which would otherwise read as
/// nodes with nothing available.
async fn check_nodes(inv: &Inventory, tenant: &Tenant, scope: &Scope) -> Result<()> {
    let ids = match scope {
        Scope::Node(ids) if !ids.is_empty() => ids,
        _ => return Ok(()), // every node: nothing to look up
    };
    let known = repo::nodes::visible(&inv.pool, tenant, ids).await?;
    let mut v = Violations::new();
    for (i, id) in ids.iter().enumerate() {
        if !known.contains_key(id) {
            v.add(format!("node_ids[{i}]"), format!("nodes/{id} not found"));
        }
    }
    Ok(v.into_result(())?)
}

pub(super) fn parse_skus(v: &mut Violations, skus: &[String], required: bool) -> Vec<String> {
    oms_kernel::parse_skus(v, "skus", skus, (required, MAX_SKUS))
}

/// Figures per `GetAvailability` page (default, most): a node-scope answer
/// has one per SKU and node, 17 to about 150 bytes each, and a client reads
/// at most 4 MiB of an answer by default; 1,000 SKUs over 500 stores, in
/// one answer, came to tens of megabytes that no default client could read.
const PAGE: (u32, u32) = (10_000, 20_000);

/// SKUs whose node figures are read at once before a page knows how many
/// nodes a SKU has.
const FIRST_NODE_READ: usize = 100;

pub async fn get(
    inv: &Inventory,
    tenant: &Tenant,
    req: GetAvailabilityRequest,
) -> Result<GetAvailabilityResponse> {
    let mut v = Violations::new();
    let skus = parse_skus(&mut v, &req.skus, true);
    let scope = parse_scope(&mut v, req.scope, &req.node_ids, &req.channel);
    if !req.backorders_of.is_empty() {
        v.check("backorders_of", check_source(&req.backorders_of));
    }
    let kept = Kept {
        before: req.before_backorders,
        except: &req.backorders_of,
    };
    let filters = oms_kernel::fingerprint(&GetAvailabilityRequest {
        page_size: 0,
        page_token: String::new(),
        ..req.clone()
    });
    let paging =
        Paging::<(String, String)>::parse(&mut v, req.page_size, &req.page_token, PAGE, filters);
    v.into_result(())?;
    check_nodes(inv, tenant, &scope).await?;
    let feed_cursor = outbox::head(&inv.pool).await?.to_string();
    // A page reads SKUs from the token's on, a few at a time, until it
    // has a figure more than it gives (so it knows a next page exists).
    let after = paging.after.as_ref();
    let past = |a: &Availability| after.is_none_or(|(s, n)| (&a.sku, &a.node_id) > (s, n));
    let mut rest = &skus[after.map_or(0, |(sku, _)| skus.partition_point(|s| s < sku))..];
    let wanted = paging.fetch() as usize;
    let (mut rows, mut read) = (Vec::new(), 0usize);
    while !rest.is_empty() && rows.len() < wanted {
        let need = wanted - rows.len();
        let n = match (&scope, read) {
            (Scope::Node(_), 0) => FIRST_NODE_READ,
            // Node figures per SKU so far size the next read.
            (Scope::Node(_), _) => need.div_ceil(rows.len().div_ceil(read).max(1)),
            _ => need, // one figure per SKU
        };
        let n = n.clamp(1, rest.len());
        let (now, later) = rest.split_at(n);
        rows.extend(
            compute(inv, tenant, now, &scope, kept)
                .await?
                .into_iter()
                .filter(past),
        );
        (rest, read) = (later, read + n);
    }
    let (availabilities, next_page_token) =
        paging.page(rows, |a| (a.sku.clone(), a.node_id.clone()));
    Ok(GetAvailabilityResponse {
        availabilities,
        feed_cursor,
        next_page_token,
    })
}

/// What an inventory event may have changed the figures of.
enum Touched {
    Skus(Vec<String>),
    /// Every SKU (a channel's pool or buffer changed).
    All,
}

/// What of the figures in `scope` an inventory event may have changed.
fn touched(ev: &InventoryEvent, scope: &Scope) -> Touched {
    use inventory_event::Kind;
    let reservation = |r: &Option<Reservation>| {
        r.as_ref()
            .map(|r| r.lines.iter().map(|l| l.sku.clone()).collect())
            .unwrap_or_default()
    };
    Touched::Skus(match &ev.kind {
        Some(Kind::StockMoved(m)) => m.movement.iter().map(|m| m.sku.clone()).collect(),
        Some(Kind::StockReserved(e)) => reservation(&e.reservation),
        Some(Kind::ReservationConfirmed(e)) => reservation(&e.reservation),
        Some(Kind::ReservationReleased(e)) => reservation(&e.reservation),
        Some(Kind::AllocationsConsumed(e)) => reservation(&e.reservation),
        Some(Kind::ReservationExtended(e)) => reservation(&e.reservation),
        Some(Kind::SafetyStockSet(e)) => e.skus.clone(),
        Some(Kind::LotExpired(e)) => vec![e.sku.clone()],
        Some(Kind::LotRestored(e)) => vec![e.sku.clone()],
        Some(Kind::NodeChanged(e)) => e.skus.clone(),
        Some(Kind::TransferClosed(e)) => e
            .transfer
            .iter()
            .flat_map(|t| t.lines.iter().map(|l| l.sku.clone()))
            .collect(),
        Some(Kind::BackorderDemandSet(e)) => match scope {
            Scope::Node(_) => vec![],
            _ => e.skus.clone(),
        },
        Some(Kind::ExpectedInboundSet(e)) => e.skus.clone(),
        Some(Kind::ChannelRuleSet(e)) => match (scope, &e.rule) {
            (Scope::Channel(c), Some(rule)) if *c == rule.channel => return Touched::All,
            _ => vec![],
        },
        None => vec![],
    })
}

/// A figure a change may have altered: a SKU's (network or channel
/// scope), or a SKU's at a node (node scope; `None`: at every node, when
/// the change does not say which).
type Key = (String, Option<String>);

/// The SKUs at nodes an inventory event may have changed the node figures
/// of. Holds not at a node (a network line) change none; a transfer's
/// shipment changes what its receiver has on the way, which the movement
/// does not name, so every node of the SKU.
fn touched_at_nodes(ev: &InventoryEvent) -> Vec<Key> {
    use inventory_event::Kind;
    let at = |sku: &str, node: &str| (sku.to_owned(), Some(node.to_owned()));
    let reservation = |r: &Option<Reservation>| -> Vec<Key> {
        let lines = r.iter().flat_map(|r| r.lines.iter());
        (lines.flat_map(|l| {
            let own = (!l.node_id.is_empty()).then(|| at(&l.sku, &l.node_id));
            own.into_iter()
                .chain(l.allocations.iter().map(|a| at(&a.sku, &a.node_id)))
        }))
        .collect()
    };
    match &ev.kind {
        Some(Kind::StockMoved(m)) => (m.movement.iter())
            .map(|m| match MovementKind::try_from(m.kind) {
                Ok(MovementKind::TransferOut) => (m.sku.clone(), None),
                _ => at(&m.sku, &m.node_id),
            })
            .collect(),
        Some(Kind::StockReserved(e)) => reservation(&e.reservation),
        Some(Kind::ReservationConfirmed(e)) => reservation(&e.reservation),
        Some(Kind::ReservationReleased(e)) => reservation(&e.reservation),
        Some(Kind::AllocationsConsumed(e)) => reservation(&e.reservation),
        Some(Kind::ReservationExtended(e)) => reservation(&e.reservation),
        Some(Kind::SafetyStockSet(e)) => e.skus.iter().map(|s| at(s, &e.node_id)).collect(),
        Some(Kind::LotExpired(e)) => vec![at(&e.sku, &e.node_id)],
        Some(Kind::LotRestored(e)) => vec![at(&e.sku, &e.node_id)],
        Some(Kind::NodeChanged(e)) => e.skus.iter().map(|s| at(s, &e.node_id)).collect(),
        Some(Kind::TransferClosed(e)) => (e.transfer.iter())
            .flat_map(|t| {
                (t.lines.iter())
                    .flat_map(|l| [at(&l.sku, &t.from_node_id), at(&l.sku, &t.to_node_id)])
            })
            .collect(),
        Some(Kind::ExpectedInboundSet(e)) => {
            let nodes = e.inbound.iter().map(|i| i.node_id.as_str());
            let nodes: Vec<&str> = (nodes.chain(Some(e.previous_node_id.as_str())))
                .filter(|n| !n.is_empty())
                .collect();
            (e.skus.iter())
                .flat_map(|s| nodes.iter().map(move |n| at(s, n)))
                .collect()
        }
        // Demand is no node's: node figures leave it out.
        Some(Kind::ChannelRuleSet(_) | Kind::BackorderDemandSet(_)) | None => vec![],
    }
}

/// The SKUs an event touched, limited to `only` when set, sorted.
async fn touched_skus(
    inv: &Inventory,
    tenant: &Tenant,
    touched: Touched,
    only: &[String],
) -> Result<Vec<String>> {
    let mut skus = match touched {
        Touched::Skus(skus) => skus,
        Touched::All if !only.is_empty() => only.to_vec(),
        Touched::All => {
            let mut all = vec![];
            loop {
                let after = all.last().map(|s: &String| s.as_str());
                let page = repo::items::list(&inv.pool, tenant, after, MAX_SKUS as i64).await?;
                if page.is_empty() {
                    break;
                }
                all.extend(page.into_iter().map(|i| i.sku));
            }
            all
        }
    };
    skus.sort();
    skus.dedup();
    skus.retain(|s| only.is_empty() || only.contains(s));
    Ok(skus)
}

/// Changes read from the feed at once (at most a page of it). A run's
/// figures are read once, so a watcher behind a burst (an import's 1,000
/// changes a chunk, each touching a SKU's figure) sends each SKU's figure
/// once per run: with runs of 500, 80 times for an import of 40,000 rows
/// over 200 SKUs, and it caught up 14 s after the import ended (under
/// `make up`).
const RUN: usize = 5000;

/// The figures a run of changes read together calls for. A figure is
/// the current one whenever it is read, so it is read once per SKU (and
/// node) for the whole run and sent at the last change of the run that
/// touched it: a watcher behind a hot SKU (hundreds of reservations per
/// commit) reads and sends one figure per run, not one per change. Each
/// change's figures carry, all but the last, the cursor before it, so
/// resuming after any of them misses none.
async fn run_figures(
    inv: &Inventory,
    tenant: &Tenant,
    rows: Vec<std::result::Result<outbox::OutboxRow, outbox::FeedError>>,
    only: &[String],
    scope: &Scope,
) -> Result<Vec<WatchAvailabilityResponse>> {
    let wanted = among(match scope {
        Scope::Node(nodes) => nodes,
        _ => &[],
    });
    let mut changes = Vec::with_capacity(rows.len());
    for row in rows {
        let row = row?;
        let ev = InventoryEvent::decode(row.payload.as_slice())
            .map_err(|e| crate::error::Error::Internal(e.to_string()))?;
        let mut keys: Vec<Key> = match scope {
            // Only the watcher's SKUs and nodes: the figures of others
            // are not read.
            Scope::Node(_) => touched_at_nodes(&ev)
                .into_iter()
                .filter(|(s, n)| {
                    (only.is_empty() || only.contains(s)) && n.as_deref().is_none_or(&wanted)
                })
                .collect(),
            _ => (touched_skus(inv, tenant, touched(&ev, scope), only).await?)
                .into_iter()
                .map(|s| (s, None))
                .collect(),
        };
        keys.sort();
        keys.dedup();
        changes.push((row, keys));
    }
    let mut last_change: BTreeMap<&Key, usize> = BTreeMap::new();
    for (i, (_, keys)) in changes.iter().enumerate() {
        for k in keys {
            last_change.insert(k, i);
        }
    }
    let skus: Vec<String> = (last_change.keys().map(|(s, _)| s.clone()))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    // By (SKU, node); the node is empty outside node scope. In node scope,
    // the figures of the nodes with the SKU (or some on the way) among the
    // watcher's: a node named that has none of it gets a figure when a
    // change names it (the empty one below), not at every transfer of the
    // SKU between other nodes (GetAvailability gives one for every node
    // named).
    let with_the_sku = match scope {
        Scope::Node(_) => &Scope::Node(vec![]),
        other => other,
    };
    let mut figures: BTreeMap<(String, String), Availability> = BTreeMap::new();
    for chunk in skus.chunks(MAX_SKUS) {
        for a in compute(inv, tenant, chunk, with_the_sku, Kept::default()).await? {
            if wanted(&a.node_id) {
                figures.insert((a.sku.clone(), a.node_id.clone()), a);
            }
        }
    }
    let figures_of = |(sku, node): &Key| -> Vec<Availability> {
        match node {
            // A node that promises none of the SKU now (disabled, no
            // longer shared) has no figure: an empty one says so.
            Some(n) => match figures.get(&(sku.clone(), n.clone())) {
                Some(a) => vec![a.clone()],
                None => vec![empty_at(sku, n)],
            },
            None => (figures.range((sku.clone(), String::new())..))
                .take_while(|((s, _), _)| s == sku)
                .map(|(_, a)| a.clone())
                .collect(),
        }
    };
    let mut out = Vec::new();
    for (i, (row, keys)) in changes.iter().enumerate() {
        let mine: Vec<Availability> = (keys.iter())
            .filter(|k| last_change[k] == i)
            .flat_map(figures_of)
            .collect();
        let meta = row.meta();
        let before = row.cursor.before().to_string();
        let last = mine.len().saturating_sub(1);
        for (j, a) in mine.into_iter().enumerate() {
            // An id of its own per figure, for consumers to deduplicate on.
            let name = match a.node_id.as_str() {
                "" => a.sku.clone(),
                node => format!("{}\n{node}", a.sku),
            };
            out.push(WatchAvailabilityResponse {
                meta: Some(EventMeta {
                    event_id: uuid::Uuid::new_v5(&row.event_id, name.as_bytes()).to_string(),
                    cursor: if j == last {
                        meta.cursor.clone()
                    } else {
                        before.clone()
                    },
                    ..meta.clone()
                }),
                availability: Some(a),
            });
        }
    }
    Ok(out)
}

/// Follows the inventory feed and answers each run of changes with the
/// new figure of every SKU they touched (network, or the channel's).
pub async fn watch(
    inv: super::Shared,
    tenant: Tenant,
    req: WatchAvailabilityRequest,
) -> Result<impl Stream<Item = Result<WatchAvailabilityResponse>>> {
    let mut v = Violations::new();
    let after = v
        .check("after_cursor", Cursor::parse(&req.after_cursor))
        .unwrap_or_default();
    let only = parse_skus(&mut v, &req.skus, false);
    let scope = parse_scope(&mut v, req.scope, &req.node_ids, &req.channel);
    v.into_result(())?;
    check_nodes(&inv, &tenant, &scope).await?;
    let feed = outbox::follow_in_pages(
        inv.pool.clone(),
        tenant.clone(),
        after,
        inv.waker.clone(),
        inv.shutdown.clone(),
        RUN as i64,
    );
    Ok(feed
        // What the feed has read and not yet handed out: a page of it when
        // the watcher is behind, one change when it keeps up.
        .ready_chunks(RUN)
        .then(move |rows| {
            let (inv, tenant, only, scope) =
                (inv.clone(), tenant.clone(), only.clone(), scope.clone());
            async move { run_figures(&inv, &tenant, rows, &only, &scope).await }
        })
        .flat_map(|run: Result<Vec<WatchAvailabilityResponse>>| {
            futures::stream::iter(match run {
                Ok(v) => v.into_iter().map(Ok).collect::<Vec<_>>(),
                Err(e) => vec![Err(e)],
            })
        }))
}
