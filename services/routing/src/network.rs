//! What routing learns from inventory: the tenant's nodes and channels'
//! pools of nodes (cached for a few seconds; they change rarely) and live
//! per-node availability (read for every plan).
use crate::engine::model::{Geo, Network, NodeInfo, Stock};
use chrono::{Offset, TimeZone, Utc};
use oms_kernel::Tenant;
use oms_proto::common::NodeKind;
use oms_proto::inventory::{
    AvailabilityScope, GetAvailabilityRequest, ListChannelRulesRequest, ListNodesRequest, Node,
    inventory_service_client::InventoryServiceClient,
};
use oms_runtime::{auth::TokenIssuer, client::Outbound, status};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::{Code, Status, transport::Channel};

const DOMAIN: &str = "routing.oms";
/// How long a tenant's node list and pools are reused.
const NODES_TTL: Duration = Duration::from_secs(5);

pub struct Inventory {
    channel: Channel,
    issuer: TokenIssuer,
    nodes: Mutex<HashMap<String, (Instant, Arc<Network>)>>,
}

fn unavailable(what: &str, st: &Status) -> Status {
    status::with_reason(
        Code::Unavailable,
        DOMAIN,
        "INVENTORY_UNAVAILABLE",
        format!("inventory could not {what}: {}", st.message()),
    )
}

impl Inventory {
    pub fn new(channel: Channel, issuer: TokenIssuer) -> Self {
        Inventory {
            channel,
            issuer,
            nodes: Mutex::new(HashMap::new()),
        }
    }

    fn client(
        &self,
        tenant: &Tenant,
    ) -> InventoryServiceClient<tonic::service::interceptor::InterceptedService<Channel, Outbound>>
    {
        InventoryServiceClient::with_interceptor(
            self.channel.clone(),
            Outbound::for_tenant(&self.issuer, tenant, "service:routing"),
        )
    }

    /// The nodes `tenant` may use, with its channels' pools: as read in
    /// the last `NODES_TTL`, or read now when `fresh`.
    pub async fn network(&self, tenant: &Tenant, fresh: bool) -> Result<Arc<Network>, Status> {
        if let Some((at, net)) = self
            .nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(tenant.as_str())
            && at.elapsed() < NODES_TTL
            && !fresh
        {
            return Ok(net.clone());
        }
        let mut client = self.client(tenant);
        let mut nodes = Vec::new();
        let mut token = String::new();
        loop {
            let page = client
                .list_nodes(ListNodesRequest {
                    page_size: 1000,
                    page_token: token,
                    ..Default::default()
                })
                .await
                .map_err(|e| unavailable("list nodes", &e))?
                .into_inner();
            nodes.extend(page.nodes.iter().map(node_info));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        let mut pools = Vec::new();
        let mut token = String::new();
        loop {
            let page = client
                .list_channel_rules(ListChannelRulesRequest {
                    page_size: 1000,
                    page_token: token,
                })
                .await
                .map_err(|e| unavailable("list channel rules", &e))?
                .into_inner();
            pools.extend(page.rules.into_iter().map(|r| (r.channel, r.node_ids)));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        let net = Arc::new(Network::new(nodes).with_pools(pools));
        self.nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(tenant.as_str().to_owned(), (Instant::now(), net.clone()));
        Ok(net)
    }

    /// Live availability of `skus` at every node of `net`: per SKU, units
    /// per node index; and whether inventory named a node `net` does not
    /// have (one created or enabled since `net` was read).
    pub async fn availability(
        &self,
        tenant: &Tenant,
        net: &Network,
        skus: &[String],
    ) -> Result<(HashMap<String, Vec<i64>>, bool), Status> {
        let mut table: HashMap<String, Vec<i64>> = HashMap::new();
        let mut unknown = false;
        let mut client = self.client(tenant);
        // Inventory answers at most 1,000 SKUs a call, and a node-scope
        // answer over many stores in pages.
        for chunk in skus.chunks(1000) {
            let mut page_token = String::new();
            loop {
                let resp = client
                    .get_availability(GetAvailabilityRequest {
                        skus: chunk.to_vec(),
                        scope: AvailabilityScope::Node as i32,
                        page_token,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| unavailable("report availability", &e))?
                    .into_inner();
                for a in resp.availabilities {
                    match net.index_of(&a.node_id) {
                        Some(n) => {
                            table
                                .entry(a.sku)
                                .or_insert_with(|| vec![0; net.nodes.len()])[n] = a.available
                        }
                        None => unknown = true,
                    }
                }
                if resp.next_page_token.is_empty() {
                    break;
                }
                page_token = resp.next_page_token;
            }
        }
        Ok((table, unknown))
    }
}

/// The engine's stock for an order's SKUs, from an availability table.
pub fn stock(table: &HashMap<String, Vec<i64>>, skus: &[String], nodes: usize) -> Stock {
    let mut stock = Stock::new(skus.len(), nodes);
    for (k, sku) in skus.iter().enumerate() {
        if let Some(units) = table.get(sku) {
            for (n, q) in units.iter().enumerate() {
                stock.set(k, n, *q);
            }
        }
    }
    stock
}

fn minutes(hh_mm: &str) -> Option<u32> {
    let (h, m) = hh_mm.split_once(':')?;
    Some(h.parse::<u32>().ok()? * 60 + m.parse::<u32>().ok()?)
}

/// The node's offset from UTC now; unknown zones count as UTC.
fn utc_offset_minutes(zone: &str) -> i32 {
    zone.parse::<chrono_tz::Tz>()
        .map(|tz| {
            tz.offset_from_utc_datetime(&Utc::now().naive_utc())
                .fix()
                .local_minus_utc()
                / 60
        })
        .unwrap_or(0)
}

pub fn node_info(n: &Node) -> NodeInfo {
    let caps = n.capabilities.unwrap_or_default();
    let addr = n.address.clone().unwrap_or_default();
    NodeInfo {
        id: n.node_id.clone(),
        kind: NodeKind::try_from(n.kind).unwrap_or_default(),
        region: n.region.clone(),
        country: addr.country_code.clone(),
        enabled: n.enabled,
        ship: caps.ship,
        pickup: caps.pickup,
        ship_from_store: caps.ship_from_store,
        geo: addr.geo.map(|g| Geo {
            lat: g.latitude,
            lon: g.longitude,
        }),
        priority: n.priority,
        daily_capacity: n.daily_capacity,
        cutoff_minute: minutes(&n.cutoff_local_time),
        utc_offset_minutes: utc_offset_minutes(&n.time_zone),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_and_cut_offs() {
        assert_eq!(minutes("14:30"), Some(870));
        assert_eq!(minutes(""), None);
        assert_eq!(utc_offset_minutes("UTC"), 0);
        assert_eq!(utc_offset_minutes("Asia/Kolkata"), 330);
        assert_eq!(utc_offset_minutes("Not/AZone"), 0);
    }
}
