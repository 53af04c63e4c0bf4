//! WatchChannelAvailability: what a channel may sell, in its own SKUs.
//! Inventory owns the figures (its channel scope: the channel's node pool
//! and buffer, set there by SetChannelRule); this follows inventory's
//! availability feed at that scope and names each item by the channel
//! SKUs that name it.
use crate::skus::ChannelSkus;
use oms_kernel::Tenant;
use oms_proto::common::EventMeta;
use oms_proto::ingest::{Channel, WatchChannelAvailabilityResponse};
use oms_proto::inventory::{self as inv, inventory_service_client::InventoryServiceClient};
use oms_runtime::client::Outbound;
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
    /// Where the channel is read (remembered a moment: every figure needs it).
    pub submissions: crate::submissions::Submissions,
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
        let mut before = after.clone();
        let mut feed = self
            .inventory
            .watch_availability(inv::WatchAvailabilityRequest {
                after_cursor: after,
                channel: self.channel.name.clone(),
                ..Default::default()
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
            let group = messages(&skus, &meta, &figure);
            if let Watcher::Gone = send_group(tx, group, &before).await {
                return Ok(());
            }
            before = meta.cursor;
        }
    }

    /// Sends the current figure of every item; returns the feed cursor
    /// that misses no change made since they were read.
    async fn current(&mut self, tx: &Sender<Sent>) -> Result<(Watcher, String), Status> {
        let skus = ChannelSkus::of(&self.channel);
        // Figures that are not events still get ids of their own.
        let snapshot = Uuid::now_v7();
        let mut resume = None;
        // The snapshot is one group: only its last message carries the feed
        // cursor (a watcher cut off before it starts again), so one message
        // is held back until the next is known.
        let mut held: Option<WatchChannelAvailabilityResponse> = None;
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
                        channel: self.channel.name.clone(),
                        // A figure per SKU: a page of items is one page.
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                // The first page's position covers every later page too.
                resume.get_or_insert(read.feed_cursor);
                let meta = EventMeta {
                    event_id: snapshot.to_string(),
                    occur_time: Some(oms_runtime::time::to_timestamp(chrono::Utc::now())),
                    tenant: self.tenant.as_str().to_owned(),
                    cursor: String::new(),
                    subject: self.channel.name.clone(),
                    ..Default::default()
                };
                for figure in &read.availabilities {
                    for msg in messages(&skus, &meta, figure) {
                        if let Some(prev) = held.replace(msg)
                            && tx.send(Ok(prev)).await.is_err()
                        {
                            return Ok((Watcher::Gone, String::new()));
                        }
                    }
                }
            }
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        // No items yet: every change to come is in the feed from its start.
        let resume = resume.unwrap_or_default();
        if let Some(mut last) = held {
            if let Some(m) = last.meta.as_mut() {
                m.cursor = resume.clone();
            }
            if tx.send(Ok(last)).await.is_err() {
                return Ok((Watcher::Gone, String::new()));
            }
        }
        Ok((Watcher::Listening, resume))
    }

    async fn skus(&self) -> Result<ChannelSkus, Status> {
        let id = &self.channel.channel_id;
        match self.submissions.channel(&self.tenant, id).await? {
            // A disabled channel sells nothing: its watchers are told so.
            Some((c, _)) if !c.enabled => Err(disabled(&self.channel.name)),
            Some((c, _)) => Ok(ChannelSkus::of(&c)),
            None => Err(oms_runtime::status::not_found(
                crate::grpc::DOMAIN,
                "channel",
                &self.channel.name,
            )),
        }
    }
}

/// A disabled channel's availability is not published.
pub fn disabled(channel: &str) -> Status {
    oms_runtime::status::failed_precondition(
        crate::grpc::DOMAIN,
        "CHANNEL_DISABLED",
        channel,
        "the channel is disabled; enable it to publish its availability",
    )
}

/// One item's figure under each channel SKU that names it; each message
/// has an id of its own, the same every time this figure of this event is
/// sent.
fn messages(
    skus: &ChannelSkus,
    meta: &EventMeta,
    figure: &inv::Availability,
) -> Vec<WatchChannelAvailabilityResponse> {
    let base = Uuid::parse_str(&meta.event_id).unwrap_or_default();
    skus.channel_skus(&figure.sku)
        .into_iter()
        .map(|channel_sku| WatchChannelAvailabilityResponse {
            meta: Some(EventMeta {
                event_id: Uuid::new_v5(&base, channel_sku.as_bytes()).to_string(),
                ..meta.clone()
            }),
            sku: figure.sku.clone(),
            available: figure.available,
            restock_time: figure.restock_time,
            channel_sku,
        })
        .collect()
}

/// Sends the messages of one change: all but the last carry `before` (the
/// position before the change), so resuming after any of them repeats the
/// change rather than missing part of it.
async fn send_group(
    tx: &Sender<Sent>,
    group: Vec<WatchChannelAvailabilityResponse>,
    before: &str,
) -> Watcher {
    let last = group.len().saturating_sub(1);
    for (i, mut msg) in group.into_iter().enumerate() {
        if i < last
            && let Some(m) = msg.meta.as_mut()
        {
            m.cursor = before.to_owned();
        }
        if tx.send(Ok(msg)).await.is_err() {
            return Watcher::Gone;
        }
    }
    Watcher::Listening
}
