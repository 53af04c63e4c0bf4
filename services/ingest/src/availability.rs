//! WatchChannelAvailability: what a channel may sell, in its own SKUs.
//! Inventory owns the figures (its channel scope: the channel's node pool
//! and buffer, set there by SetChannelRule); this follows inventory's
//! availability feed at that scope and names each item by the channel
//! SKUs that name it.
use crate::repo;
use crate::skus::ChannelSkus;
use oms_kernel::Tenant;
use oms_proto::common::EventMeta;
use oms_proto::ingest::{Channel, WatchChannelAvailabilityResponse};
use oms_proto::inventory::{self as inv, inventory_service_client::InventoryServiceClient};
use oms_runtime::client::Outbound;
use sqlx::PgPool;
use tokio::sync::mpsc::Sender;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::{Status, transport::Channel as GrpcChannel};
use uuid::Uuid;

type Inventory = InventoryServiceClient<InterceptedService<GrpcChannel, Outbound>>;
type Sent = Result<WatchChannelAvailabilityResponse, Status>;

/// Items asked about per call while sending the current figures.
const PAGE: i32 = 1000;

/// One watcher of one channel.
pub struct Watch {
    pub pool: PgPool,
    pub inventory: Inventory,
    pub tenant: Tenant,
    pub channel: Channel,
    pub shutdown: CancellationToken,
}

/// Whether the watcher is still there.
enum Watcher {
    Listening,
    Gone,
}

impl Watch {
    /// Sends figures to `tx` until the watcher goes away or the service
    /// stops: with no `after_cursor`, the current figure of every item
    /// first; then every change after it. A failure ends the stream with
    /// its status.
    pub async fn run(mut self, after_cursor: String, tx: Sender<Sent>) {
        if let Err(e) = self.serve(after_cursor, &tx).await {
            let _ = tx.send(Err(e)).await;
        }
    }

    async fn serve(&mut self, after_cursor: String, tx: &Sender<Sent>) -> Result<(), Status> {
        let after = if after_cursor.is_empty() {
            match self.current(tx).await? {
                (Watcher::Gone, _) => return Ok(()),
                (Watcher::Listening, after) => after,
            }
        } else {
            after_cursor
        };
        let mut feed = self
            .inventory
            .watch_availability(inv::WatchAvailabilityRequest {
                after_cursor: after,
                skus: vec![],
                channel: self.channel.name.clone(),
            })
            .await?
            .into_inner();
        loop {
            let change = tokio::select! {
                m = feed.message() => m?,
                _ = tx.closed() => return Ok(()),
                _ = self.shutdown.cancelled() => return Ok(()),
            };
            let Some(change) = change else {
                return Err(Status::unavailable(
                    "the inventory availability feed ended; watch again from the last cursor",
                ));
            };
            let (Some(meta), Some(figure)) = (change.meta, change.availability) else {
                continue;
            };
            // Mappings may have changed since the last figure: names follow.
            let skus = self.skus().await?;
            if let Watcher::Gone = send(tx, &skus, &meta, &figure).await {
                return Ok(());
            }
        }
    }

    /// Sends the current figure of every item; returns the feed cursor
    /// that misses no change made since they were read.
    async fn current(&mut self, tx: &Sender<Sent>) -> Result<(Watcher, String), Status> {
        let skus = ChannelSkus::of(&self.channel);
        // Figures that are not events still get ids of their own.
        let snapshot = Uuid::now_v7();
        let mut resume = None;
        let mut page_token = String::new();
        loop {
            let page = self
                .inventory
                .list_items(inv::ListItemsRequest {
                    page_size: PAGE,
                    page_token,
                })
                .await?
                .into_inner();
            if !page.items.is_empty() {
                let read = self
                    .inventory
                    .get_availability(inv::GetAvailabilityRequest {
                        skus: page.items.into_iter().map(|i| i.sku).collect(),
                        scope: inv::AvailabilityScope::Channel as i32,
                        node_ids: vec![],
                        channel: self.channel.name.clone(),
                    })
                    .await?
                    .into_inner();
                // The first page's position covers every later page too.
                let cursor = resume.get_or_insert(read.feed_cursor).clone();
                let meta = EventMeta {
                    event_id: snapshot.to_string(),
                    occur_time: Some(oms_runtime::time::to_timestamp(chrono::Utc::now())),
                    tenant: self.tenant.as_str().to_owned(),
                    cursor,
                    subject: self.channel.name.clone(),
                    ..Default::default()
                };
                for figure in &read.availabilities {
                    if let Watcher::Gone = send(tx, &skus, &meta, figure).await {
                        return Ok((Watcher::Gone, String::new()));
                    }
                }
            }
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        // No items yet: every change to come is in the feed from its start.
        Ok((Watcher::Listening, resume.unwrap_or_default()))
    }

    async fn skus(&self) -> Result<ChannelSkus, Status> {
        let id = &self.channel.channel_id;
        match repo::channel(&self.pool, &self.tenant, id, false).await {
            Ok(Some((c, _))) => Ok(ChannelSkus::of(&c)),
            Ok(None) => Err(oms_runtime::status::not_found(
                crate::grpc::DOMAIN,
                "channel",
                &self.channel.name,
            )),
            Err(e) => Err(oms_runtime::status::from_db(crate::grpc::DOMAIN, &e)),
        }
    }
}

/// Sends one item's figure under each channel SKU that names it; each
/// message has an id of its own, the same every time this figure of this
/// event is sent.
async fn send(
    tx: &Sender<Sent>,
    skus: &ChannelSkus,
    meta: &EventMeta,
    figure: &inv::Availability,
) -> Watcher {
    let base = Uuid::parse_str(&meta.event_id).unwrap_or_default();
    for channel_sku in skus.channel_skus(&figure.sku) {
        let msg = WatchChannelAvailabilityResponse {
            meta: Some(EventMeta {
                event_id: Uuid::new_v5(&base, channel_sku.as_bytes()).to_string(),
                ..meta.clone()
            }),
            sku: figure.sku.clone(),
            available: figure.available,
            channel_sku,
        };
        if tx.send(Ok(msg)).await.is_err() {
            return Watcher::Gone;
        }
    }
    Watcher::Listening
}
