//! The reference WMS simulator: it connects to fulfillment as a WMS
//! adapter (the real `ConnectAdapter` stream), serves the nodes it is told
//! to, and walks every released fulfillment order through accepted,
//! picking, packed, shipped and delivered, a step every `step`. It rejects
//! or short-picks a configurable share of them, answers cancel commands
//! (cancelled until packed, refused after), receives what advance shipping
//! notices announce (a receipt of every expected unit), acknowledges each
//! command once it has taken the work, and reconnects after any break from
//! the last command it processed. Like a warehouse, it goes on with the
//! work while its stream is down: what it reports waits until fulfillment
//! answers it, and goes out again, in order, on the next stream. Given the inventory service
//! (`inventory_url`), it picks lot-kept stock as a warehouse does: first
//! expiring first, among the node's lots not expired and expiring no
//! earlier than a line's `min_expiry_date`, one shipped line per lot, and
//! reports what those lots cannot cover as short-picked; a serial-tracked
//! item ships serial numbers inventory has on hand there, one per unit.
//! Units a walk under way picked are not picked again by another
//! (inventory counts them until their shipment is consumed): each walk's
//! picks are held back until fulfillment has answered its last report, a
//! step after its shipment. A release that comes twice (commands arrive at least once)
//! is walked once.
//!
//! Event ids are derived from the fulfillment order and the step, so a
//! simulator restarted from sequence 0 replays the same events and the
//! server answers them without applying them twice.
use oms_kernel::Tenant;
use oms_proto::fulfillment::{
    AdapterHello, AdvanceShippingNotice, CancelAnswered, CommandAck, ConnectAdapterRequest,
    FulfillmentLine, FulfillmentOrder, Heartbeat, OrderAccepted, OrderDelivered, OrderPacked,
    OrderRejected, OrderShipped, OrderShortPicked, PickingStarted, Receipt, ReceiptReported,
    ReceivedLine, Shipment, ShippedLine, StatusEvent, command::Kind as Cmd,
    connect_adapter_request::Message as In, connect_adapter_response::Message as Out,
    fulfillment_service_client::FulfillmentServiceClient, status_event::Kind as Ev,
};
use oms_proto::inventory::{
    ListSerialNumbersRequest, ListStockLevelsRequest, StockLevel,
    inventory_service_client::InventoryServiceClient,
};
use oms_runtime::{
    auth::TokenIssuer,
    client::{self, Outbound},
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{service::interceptor::InterceptedService, transport::Channel};

/// One simulated WMS serving `nodes` for `tenant`.
#[derive(Clone)]
pub struct Sim {
    pub url: String,
    pub tenant: Tenant,
    pub issuer: TokenIssuer,
    pub adapter_id: String,
    pub nodes: Vec<String>,
    pub step: Duration,
    pub reject_rate: f64,
    pub short_pick_rate: f64,
    pub seed: u64,
    /// The inventory service, to pick lots from (none: ship lines as
    /// released, without lots).
    pub inventory_url: Option<String>,
    /// For `https://` URLs: the CA to check the services by, and the
    /// adapter's own certificate when they ask for one (`OMS_TLS_*`).
    pub tls: Option<oms_runtime::tls::TlsConfig>,
}

/// How far the simulator got with a fulfillment order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Taken,
    Packed,
    Done,
    Cancelled,
}

/// What the simulator sends on its stream.
type Outbox = mpsc::Sender<ConnectAdapterRequest>;

/// A report waiting for fulfillment's answer.
struct Report {
    event_id: String,
    message: ConnectAdapterRequest,
    /// The stream it last went out on (0: none yet).
    sent_on: u64,
    /// Picks held until it is answered.
    _holds: Option<Picks>,
}

/// Reports (status events, receipts) not answered yet, oldest first: the
/// work goes on whatever happens to the stream, and each report goes out
/// on every stream until fulfillment answers it (it applies an event id
/// once, so a repeat changes nothing).
#[derive(Default)]
struct Reports {
    waiting: Mutex<VecDeque<Report>>,
    added: Notify,
    streams: AtomicU64,
}

impl Reports {
    fn add(&self, message: ConnectAdapterRequest, holds: Option<Picks>) {
        let event_id = match &message.message {
            Some(In::Status(e)) => e.event_id.clone(),
            Some(In::Receipt(r)) => r.event_id.clone(),
            _ => String::new(),
        };
        let report = Report {
            event_id,
            message,
            sent_on: 0,
            _holds: holds,
        };
        self.lock().push_back(report);
        self.added.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Report>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A number for a new stream.
    fn new_stream(&self) -> u64 {
        self.streams.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Sends, in order, what has not gone out on `stream` yet.
    async fn send(&self, stream: u64, tx: &Outbox) -> anyhow::Result<()> {
        let due: Vec<ConnectAdapterRequest> = self
            .lock()
            .iter_mut()
            .filter(|r| r.sent_on != stream)
            .map(|r| {
                r.sent_on = stream;
                r.message.clone()
            })
            .collect();
        for m in due {
            tx.send(m).await?;
        }
        Ok(())
    }

    /// Fulfillment answered `event_id` (applied or refused for good).
    fn answered(&self, event_id: &str) {
        self.lock().retain(|r| r.event_id != event_id);
    }
}

struct Shared {
    stages: Mutex<HashMap<String, Stage>>,
    rng: Mutex<StdRng>,
    /// What walks under way picked: inventory still counts it on hand
    /// until its shipment is consumed, so a second walk must not pick it
    /// again.
    picked: Mutex<Tally>,
    /// Taken for a whole pick (read the lots, choose, count the choice),
    /// so two walks never choose from the same reading.
    picking: tokio::sync::Mutex<()>,
    reports: Reports,
}

impl Shared {
    fn new(seed: u64) -> Arc<Shared> {
        Arc::new(Shared {
            stages: Mutex::new(HashMap::new()),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            picked: Mutex::new(Tally::default()),
            picking: tokio::sync::Mutex::new(()),
            reports: Reports::default(),
        })
    }
}

/// (node, SKU, lot) or (node, SKU, serial number).
type Key = (String, String, String);

/// Units picked per lot, and serial numbers picked.
#[derive(Default)]
struct Tally {
    lots: HashMap<Key, i64>,
    serials: HashSet<Key>,
}

/// A walk's picks, counted in [`Shared::picked`] until fulfillment has
/// answered the walk's last report (its shipment, reported a step
/// earlier, has been consumed by then).
struct Picks {
    shared: Arc<Shared>,
    lots: Vec<(Key, i64)>,
    serials: Vec<Key>,
}

impl Drop for Picks {
    fn drop(&mut self) {
        let mut picked = self.shared.picked.lock().unwrap_or_else(|e| e.into_inner());
        for (key, units) in &self.lots {
            if let Some(n) = picked.lots.get_mut(key) {
                *n -= units;
                if *n <= 0 {
                    picked.lots.remove(key);
                }
            }
        }
        for key in &self.serials {
            picked.serials.remove(key);
        }
    }
}

impl Sim {
    /// Runs until `shutdown`, reconnecting after every break.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let shared = Shared::new(self.seed);
        let mut last = 0i64;
        let mut backoff = Duration::from_millis(200);
        while !shutdown.is_cancelled() {
            match self.session(&shared, &mut last, &shutdown).await {
                Ok(()) => backoff = Duration::from_millis(200),
                Err(e) => {
                    tracing::warn!(error = %e, tenant = %self.tenant, "adapter stream broke; reconnecting");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.cancelled() => break,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        Ok(())
    }

    /// The inventory client lots are picked with, when it has one.
    fn picker(&self) -> anyhow::Result<Option<Picker>> {
        let Some(url) = &self.inventory_url else {
            return Ok(None);
        };
        let auth = Outbound::for_tenant(
            &self.issuer,
            &self.tenant,
            &format!("adapter:{}", self.adapter_id),
        );
        let client = InventoryServiceClient::with_interceptor(
            client::channel(url, self.tls.as_ref())?,
            auth,
        );
        Ok(Some(Picker(client)))
    }

    async fn session(
        &self,
        shared: &Arc<Shared>,
        last: &mut i64,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let channel = client::channel(&self.url, self.tls.as_ref())?;
        let mut client = FulfillmentServiceClient::with_interceptor(
            channel,
            Outbound::for_tenant(
                &self.issuer,
                &self.tenant,
                &format!("adapter:{}", self.adapter_id),
            ),
        );
        let picker = self.picker()?;
        let (tx, rx) = mpsc::channel(256);
        tx.send(msg(In::Hello(AdapterHello {
            adapter_id: self.adapter_id.clone(),
            node_ids: self.nodes.clone(),
            last_processed_sequence: *last,
            software: concat!("oms-wms-sim/", env!("CARGO_PKG_VERSION")).into(),
        })))
        .await?;
        let mut inbound = client
            .connect_adapter(ReceiverStream::new(rx))
            .await?
            .into_inner();
        let mut heartbeat = tokio::time::interval(Duration::from_secs(5));
        let stream = shared.reports.new_stream();
        shared.reports.send(stream, &tx).await?;
        loop {
            let m = tokio::select! {
                m = inbound.message() => m?,
                _ = shared.reports.added.notified() => {
                    shared.reports.send(stream, &tx).await?;
                    continue;
                }
                _ = heartbeat.tick() => {
                    tx.send(msg(In::Heartbeat(Heartbeat::default()))).await?;
                    continue;
                }
                _ = shutdown.cancelled() => return Ok(()),
            };
            let Some(m) = m.and_then(|m| m.message) else {
                anyhow::bail!("the server closed the stream");
            };
            match m {
                Out::Welcome(w) => {
                    let every = Duration::from_secs(
                        u64::try_from(w.heartbeat_interval_seconds)
                            .unwrap_or(10)
                            .max(1),
                    );
                    heartbeat = tokio::time::interval(every / 2);
                    tracing::info!(session = %w.session_id, head = w.head_sequence, from = *last, "connected to fulfillment");
                }
                Out::Command(c) => {
                    match c.kind {
                        Some(Cmd::Release(fo)) => self.take(shared, fo, shutdown, &picker),
                        Some(Cmd::Cancel(cancel)) => {
                            self.cancel(shared, &cancel.fulfillment_order, &c.node_id)
                        }
                        Some(Cmd::Asn(asn)) => self.receive(shared, asn, shutdown),
                        // Messages are read, nothing more.
                        _ => {}
                    }
                    // What the command made is reported before it is
                    // acknowledged (a cancel's answer).
                    shared.reports.send(stream, &tx).await?;
                    *last = (*last).max(c.sequence);
                    tx.send(msg(In::Ack(CommandAck {
                        sequence: c.sequence,
                    })))
                    .await?;
                }
                Out::EventAck(a) => {
                    if !a.accepted {
                        tracing::warn!(event = %a.event_id, error = %a.error, "event refused");
                    }
                    shared.reports.answered(&a.event_id);
                }
                Out::Heartbeat(_) => {}
            }
        }
    }

    /// Takes a released fulfillment order and walks it in the background,
    /// until it is done or the simulator stops.
    fn take(
        &self,
        shared: &Arc<Shared>,
        fo: FulfillmentOrder,
        shutdown: &CancellationToken,
        picker: &Option<Picker>,
    ) {
        {
            // Commands arrive at least once: a release of work already
            // walked, or being walked, is a repeat. (A second walk would
            // pick again, and short-pick what the first one holds.)
            let mut stages = shared.stages.lock().unwrap_or_else(|e| e.into_inner());
            if stages.contains_key(&fo.name) {
                return;
            }
            stages.insert(fo.name.clone(), Stage::Taken);
        }
        let (reject, short) = {
            let mut rng = shared.rng.lock().unwrap_or_else(|e| e.into_inner());
            (
                rng.random_bool(self.reject_rate.clamp(0.0, 1.0)),
                rng.random_bool(self.short_pick_rate.clamp(0.0, 1.0)),
            )
        };
        let walk = Walk {
            fo,
            shared: shared.clone(),
            step: self.step,
            picker: picker.clone(),
        };
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                r = walk.run(reject, short) => if let Err(e) = r {
                    tracing::debug!(error = %e, "walk stopped");
                },
                _ = shutdown.cancelled() => {}
            }
        });
    }

    /// Receives what an advance shipping notice announced, all of it in
    /// good condition, a step later. The event id is the notice's, so a
    /// replay is recognised.
    fn receive(
        &self,
        shared: &Arc<Shared>,
        asn: AdvanceShippingNotice,
        shutdown: &CancellationToken,
    ) {
        let (shared, step, shutdown) = (shared.clone(), self.step, shutdown.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(step) => {}
                _ = shutdown.cancelled() => return,
            }
            let receipt = Receipt {
                receipt_id: format!("{}-1", asn.asn_id),
                asn: asn.name.clone(),
                node_id: asn.node_id.clone(),
                lines: asn
                    .lines
                    .iter()
                    .map(|l| ReceivedLine {
                        sku: l.sku.clone(),
                        quantity: l.quantity,
                        damaged: 0,
                        lot: l.lot.clone(),
                        expiry_date: String::new(),
                        serial_numbers: Vec::new(),
                    })
                    .collect(),
                receive_time: None,
                ..Default::default()
            };
            let report = msg(In::Receipt(ReceiptReported {
                event_id: format!("{}:receipt", asn.name),
                receipt: Some(receipt),
            }));
            shared.reports.add(report, None);
        });
    }

    fn cancel(&self, shared: &Shared, name: &str, node: &str) {
        let answer = {
            let mut stages = shared.stages.lock().unwrap_or_else(|e| e.into_inner());
            match stages.get(name).copied() {
                Some(Stage::Packed | Stage::Done) => CancelAnswered {
                    cancelled: false,
                    reason: "already packed".into(),
                },
                _ => {
                    stages.insert(name.to_owned(), Stage::Cancelled);
                    CancelAnswered {
                        cancelled: true,
                        reason: String::new(),
                    }
                }
            }
        };
        let answer = status(name, node, "cancel", Ev::CancelAnswered(answer));
        shared.reports.add(answer, None);
    }
}

/// One fulfillment order on its way through the warehouse.
struct Walk {
    fo: FulfillmentOrder,
    shared: Arc<Shared>,
    step: Duration,
    picker: Option<Picker>,
}

/// Picks lots from the node's stock as inventory records it.
#[derive(Clone)]
struct Picker(InventoryServiceClient<InterceptedService<Channel, Outbound>>);

impl Picker {
    /// What to ship of `units` of a line, as [`Picker::pick`] says; asks
    /// again (backing off) while inventory cannot answer, so a restarting
    /// inventory delays the work rather than dropping it.
    async fn pick_when_possible(
        &self,
        picks: &mut Picks,
        node: &str,
        line: &FulfillmentLine,
        units: i64,
    ) -> (Vec<ShippedLine>, i64) {
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.pick(picks, node, line, units).await {
                Ok(picked) => return picked,
                Err(e) => {
                    tracing::warn!(error = %e, fulfillment_order_line = %line.line_id, "cannot read the node's lots; picking again");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// What to ship of `units` of a line at `node`: one line per lot,
    /// first expiring first (undated lots last), naming a serial number
    /// per unit of a serial-tracked item, and the units no lot covers. A
    /// SKU kept neither in lots nor by serial number ships as it is.
    /// What other walks picked is not there to pick; what this one picks
    /// is counted in `picks`.
    async fn pick(
        &self,
        picks: &mut Picks,
        node: &str,
        line: &FulfillmentLine,
        units: i64,
    ) -> anyhow::Result<(Vec<ShippedLine>, i64)> {
        let _one_at_a_time = picks.shared.picking.lock().await;
        let levels = self
            .0
            .clone()
            .list_stock_levels(ListStockLevelsRequest {
                node_id: node.into(),
                skus: vec![line.sku.clone()],
                page_size: 1000,
                ..Default::default()
            })
            .await?
            .into_inner()
            .levels;
        // Only serial-tracked items have serial numbers on hand.
        let serials = self
            .0
            .clone()
            .list_serial_numbers(ListSerialNumbersRequest {
                sku: line.sku.clone(),
                node_id: node.into(),
                page_size: 1000,
                ..Default::default()
            })
            .await?
            .into_inner()
            .serial_numbers;
        let shipped = |lot: &str, quantity: i64, serial_numbers: Vec<String>| ShippedLine {
            line_id: line.line_id.clone(),
            sku: line.sku.clone(),
            quantity,
            lot: lot.into(),
            serial_numbers,
        };
        if serials.is_empty() && levels.iter().all(|l| l.lot.is_empty()) {
            return Ok((vec![shipped("", units, vec![])], 0));
        }
        let fresh = |l: &StockLevel| {
            l.on_hand > 0
                && !l.expired
                && (line.min_expiry_date.is_empty()
                    || l.expiry_date.is_empty()
                    || l.expiry_date >= line.min_expiry_date)
        };
        let mut lots: Vec<StockLevel> = levels.into_iter().filter(fresh).collect();
        lots.sort_by(|a, b| {
            (a.expiry_date.is_empty(), &a.expiry_date, &a.lot).cmp(&(
                b.expiry_date.is_empty(),
                &b.expiry_date,
                &b.lot,
            ))
        });
        let mut left = units;
        let mut out = Vec::new();
        let mut picked = picks
            .shared
            .picked
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for l in lots {
            if left == 0 {
                break;
            }
            let key = (node.to_owned(), line.sku.clone(), l.lot.clone());
            let free = l.on_hand - picked.lots.get(&key).copied().unwrap_or(0);
            let mut take = left.min(free);
            let mut chosen = Vec::new();
            if !serials.is_empty() {
                let serial_key = |s: &str| (node.to_owned(), line.sku.clone(), s.to_owned());
                chosen = serials
                    .iter()
                    .filter(|s| {
                        s.lot == l.lot && !picked.serials.contains(&serial_key(&s.serial_number))
                    })
                    .take(take.max(0) as usize)
                    .map(|s| s.serial_number.clone())
                    .collect();
                take = chosen.len() as i64;
                for s in &chosen {
                    picked.serials.insert(serial_key(s));
                    picks.serials.push(serial_key(s));
                }
            }
            if take <= 0 {
                continue;
            }
            *picked.lots.entry(key.clone()).or_default() += take;
            picks.lots.push((key, take));
            out.push(shipped(&l.lot, take, chosen));
            left -= take;
        }
        Ok((out, left))
    }
}

impl Walk {
    fn stage(&self) -> Option<Stage> {
        self.shared
            .stages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&self.fo.name)
            .copied()
    }

    fn set(&self, s: Stage) {
        self.shared
            .stages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(self.fo.name.clone(), s);
    }

    /// Reports `ev` a step from now, unless the work was cancelled.
    async fn send(&self, step: &str, ev: Ev) -> anyhow::Result<()> {
        self.send_holding(step, ev, None).await
    }

    /// [`Walk::send`], holding `picks` until fulfillment answers.
    async fn send_holding(&self, step: &str, ev: Ev, picks: Option<Picks>) -> anyhow::Result<()> {
        tokio::time::sleep(self.step).await;
        if self.stage() == Some(Stage::Cancelled) {
            anyhow::bail!("cancelled");
        }
        let report = status(&self.fo.name, &self.fo.node_id, step, ev);
        self.shared.reports.add(report, picks);
        Ok(())
    }

    async fn run(self, reject: bool, short: bool) -> anyhow::Result<()> {
        if reject {
            self.send(
                "rejected",
                Ev::Rejected(OrderRejected {
                    reason: "simulated rejection".into(),
                }),
            )
            .await?;
            self.set(Stage::Done);
            return Ok(());
        }
        self.send("accepted", Ev::Accepted(OrderAccepted {}))
            .await?;
        self.send("picking", Ev::Picking(PickingStarted {})).await?;
        // Held until fulfillment answers the last report, or until the
        // walk stops short of it (cancelled, nothing left to ship).
        let mut picks = Picks {
            shared: self.shared.clone(),
            lots: Vec::new(),
            serials: Vec::new(),
        };
        let mut lines: Vec<ShippedLine> = Vec::new();
        let mut missing: Vec<ShippedLine> = Vec::new();
        for l in &self.fo.lines {
            let units = l.quantity - l.quantity_shipped;
            if units <= 0 {
                continue;
            }
            match &self.picker {
                Some(p) if l.lot.is_empty() && l.serial_numbers.is_empty() => {
                    let (picked, short) = p
                        .pick_when_possible(&mut picks, &self.fo.node_id, l, units)
                        .await;
                    lines.extend(picked);
                    if short > 0 {
                        missing.push(ShippedLine {
                            line_id: l.line_id.clone(),
                            sku: l.sku.clone(),
                            quantity: short,
                            ..Default::default()
                        });
                    }
                }
                _ => lines.push(ShippedLine {
                    line_id: l.line_id.clone(),
                    sku: l.sku.clone(),
                    quantity: units,
                    lot: l.lot.clone(),
                    serial_numbers: l.serial_numbers.clone(),
                }),
            }
        }
        // A simulated short pick takes one unit of the first line (and
        // its serial number, if it names them).
        if short && let Some(first) = lines.first_mut() {
            missing.push(ShippedLine {
                quantity: 1,
                lot: String::new(),
                serial_numbers: Vec::new(),
                ..first.clone()
            });
            first.quantity -= 1;
            first.serial_numbers.pop();
        }
        if !missing.is_empty() {
            self.send(
                "short-picked",
                Ev::ShortPicked(OrderShortPicked {
                    missing,
                    reason: "simulated short pick".into(),
                }),
            )
            .await?;
            lines.retain(|l| l.quantity > 0);
            if lines.is_empty() {
                self.set(Stage::Done);
                return Ok(());
            }
        }
        self.send("packed", Ev::Packed(OrderPacked {})).await?;
        self.set(Stage::Packed);
        let id: String = self
            .fo
            .fulfillment_order_id
            .chars()
            .filter(|c| *c != '-')
            .take(12)
            .collect();
        let tracking = format!("SIM{id}");
        self.send(
            "shipped",
            Ev::Shipped(OrderShipped {
                shipment: Some(Shipment {
                    carrier: "SIM".into(),
                    tracking_number: tracking.clone(),
                    lines,
                    ship_time: None,
                }),
            }),
        )
        .await?;
        self.send_holding(
            "delivered",
            Ev::Delivered(OrderDelivered {
                tracking_number: tracking,
            }),
            Some(picks),
        )
        .await?;
        self.set(Stage::Done);
        Ok(())
    }
}

fn msg(m: In) -> ConnectAdapterRequest {
    ConnectAdapterRequest { message: Some(m) }
}

/// A status event whose id is the fulfillment order's and the step's, so
/// a replay is recognised.
fn status(fo: &str, node: &str, step: &str, ev: Ev) -> ConnectAdapterRequest {
    msg(In::Status(StatusEvent {
        event_id: format!("{fo}:{step}"),
        node_id: node.to_owned(),
        fulfillment_order: fo.to_owned(),
        occur_time: None,
        kind: Some(ev),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oms_runtime::{Config, Service};

    /// A report goes out once on each stream, in order, until it is
    /// answered.
    #[tokio::test]
    async fn reports_go_out_again_on_the_next_stream_until_answered() {
        let reports = Reports::default();
        let event = |step: &str| {
            status(
                "fulfillmentOrders/1",
                "DC1",
                step,
                Ev::Packed(OrderPacked {}),
            )
        };
        let (tx, mut rx) = mpsc::channel(64);
        let mut sent = async |stream| {
            reports.send(stream, &tx).await.unwrap();
            let mut ids = Vec::new();
            while let Ok(m) = rx.try_recv() {
                let Some(In::Status(e)) = m.message else {
                    panic!("a status event")
                };
                ids.push(e.event_id.rsplit(':').next().unwrap_or_default().to_owned());
            }
            ids
        };
        reports.add(event("a"), None);
        reports.add(event("b"), None);
        assert_eq!(sent(1).await, ["a", "b"]);
        assert!(sent(1).await.is_empty(), "once per stream");
        reports.answered("fulfillmentOrders/1:a");
        reports.add(event("c"), None);
        assert_eq!(sent(1).await, ["c"]);
        assert_eq!(sent(2).await, ["b", "c"], "what waits, in order");
    }

    /// A release that comes twice (commands arrive at least once) is
    /// walked once.
    #[tokio::test]
    async fn a_repeated_release_is_walked_once() {
        let cfg = Config::from_lookup(Service::Fulfillment, |_| None).unwrap();
        let sim = Sim {
            url: String::new(),
            tenant: Tenant::parse("acme").unwrap(),
            issuer: TokenIssuer::new(&cfg.auth),
            adapter_id: "sim".into(),
            nodes: vec!["DC1".into()],
            step: Duration::from_millis(1),
            reject_rate: 0.0,
            short_pick_rate: 0.0,
            seed: 1,
            inventory_url: None,
            tls: None,
        };
        let shared = Shared::new(1);
        let fo = FulfillmentOrder {
            name: "fulfillmentOrders/1".into(),
            node_id: "DC1".into(),
            lines: vec![FulfillmentLine {
                line_id: "1".into(),
                sku: "A".into(),
                quantity: 1,
                ..Default::default()
            }],
            ..Default::default()
        };
        let (tx, mut rx) = mpsc::channel(64);
        let stop = CancellationToken::new();
        sim.take(&shared, fo.clone(), &stop, &None);
        sim.take(&shared, fo, &stop, &None);
        // A stream that never answers: what it sends stays waiting.
        let reports = shared.clone();
        tokio::spawn(async move {
            loop {
                reports.reports.added.notified().await;
                reports.reports.send(1, &tx).await.unwrap();
            }
        });
        let mut steps = Vec::new();
        while steps.last().map(String::as_str) != Some("delivered") {
            let Some(In::Status(ev)) = rx.recv().await.and_then(|m| m.message) else {
                panic!("a status event");
            };
            steps.push(
                ev.event_id
                    .rsplit(':')
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
            );
        }
        // Both walks would have reported by now; the channel holds nothing more.
        assert!(rx.try_recv().is_err(), "a second walk reported");
        assert_eq!(
            steps,
            ["accepted", "picking", "packed", "shipped", "delivered"]
        );
    }
}
