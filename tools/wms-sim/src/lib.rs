//! The reference WMS simulator: it connects to fulfillment as a WMS
//! adapter (the real `ConnectAdapter` stream), serves the nodes it is told
//! to, and walks every released fulfillment order through accepted,
//! picking, packed, shipped and delivered, a step every `step`. It rejects
//! or short-picks a configurable share of them, answers cancel commands
//! (cancelled until packed, refused after), receives what advance shipping
//! notices announce (a receipt of every expected unit), acknowledges each
//! command once it has taken the work, and reconnects after any break from
//! the last command it processed. Given the inventory service
//! (`inventory_url`), it picks lot-kept stock as a warehouse does: first
//! expiring first, among the node's lots not expired and expiring no
//! earlier than a line's `min_expiry_date`, one shipped line per lot, and
//! reports what those lots cannot cover as short-picked; a serial-tracked
//! item ships serial numbers inventory has on hand there, one per unit.
//! Units a walk under way picked are not picked again by another
//! (inventory counts them until their shipment is consumed): each walk's
//! picks are held back until it ends, a step after its shipment was
//! reported. A release that comes twice (commands arrive at least once)
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
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
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
}

impl Shared {
    fn new(seed: u64) -> Arc<Shared> {
        Arc::new(Shared {
            stages: Mutex::new(HashMap::new()),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            picked: Mutex::new(Tally::default()),
            picking: tokio::sync::Mutex::new(()),
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

/// A walk's picks, counted in [`Shared::picked`] until the walk ends (by
/// then its shipment has been reported a step earlier, and consumed).
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
        let client = InventoryServiceClient::with_interceptor(client::channel(url)?, auth);
        Ok(Some(Picker(client)))
    }

    async fn session(
        &self,
        shared: &Arc<Shared>,
        last: &mut i64,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let channel = client::channel(&self.url)?;
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
        let session = shutdown.child_token();
        let _stop = session.clone().drop_guard();
        loop {
            let m = tokio::select! {
                m = inbound.message() => m?,
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
                        Some(Cmd::Release(fo)) => self.take(shared, fo, &tx, &session, &picker),
                        Some(Cmd::Cancel(cancel)) => {
                            self.cancel(shared, &cancel.fulfillment_order, &c.node_id, &tx)
                                .await?
                        }
                        Some(Cmd::Asn(asn)) => self.receive(asn, &tx, &session),
                        // Messages are read, nothing more.
                        _ => {}
                    }
                    *last = (*last).max(c.sequence);
                    tx.send(msg(In::Ack(CommandAck {
                        sequence: c.sequence,
                    })))
                    .await?;
                }
                Out::EventAck(a) if !a.accepted => {
                    tracing::warn!(event = %a.event_id, error = %a.error, "event refused");
                }
                Out::EventAck(_) | Out::Heartbeat(_) => {}
            }
        }
    }

    /// Takes a released fulfillment order and walks it in the background.
    fn take(
        &self,
        shared: &Arc<Shared>,
        fo: FulfillmentOrder,
        tx: &Outbox,
        session: &CancellationToken,
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
            tx: tx.clone(),
            shared: shared.clone(),
            step: self.step,
            picker: picker.clone(),
        };
        let session = session.clone();
        let (shared, name) = (shared.clone(), walk.fo.name.clone());
        tokio::spawn(async move {
            tokio::select! {
                r = walk.run(reject, short) => if let Err(e) = r {
                    tracing::debug!(error = %e, "walk stopped; the work comes again after reconnecting");
                },
                _ = session.cancelled() => {}
            }
            // A walk that stopped half way is walked again when its
            // command comes again (after reconnecting).
            let mut stages = shared.stages.lock().unwrap_or_else(|e| e.into_inner());
            if matches!(stages.get(&name), Some(Stage::Taken | Stage::Packed)) {
                stages.remove(&name);
            }
        });
    }

    /// Receives what an advance shipping notice announced, all of it in
    /// good condition, a step later. The event id is the notice's, so a
    /// replay is recognised.
    fn receive(&self, asn: AdvanceShippingNotice, tx: &Outbox, session: &CancellationToken) {
        let (tx, step, session) = (tx.clone(), self.step, session.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(step) => {}
                _ = session.cancelled() => return,
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
            if tx.send(report).await.is_err() {
                tracing::debug!("stream gone before the receipt; the notice comes again");
            }
        });
    }

    async fn cancel(
        &self,
        shared: &Shared,
        name: &str,
        node: &str,
        tx: &Outbox,
    ) -> anyhow::Result<()> {
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
        tx.send(status(name, node, "cancel", Ev::CancelAnswered(answer)))
            .await?;
        Ok(())
    }
}

/// One fulfillment order on its way through the warehouse.
struct Walk {
    fo: FulfillmentOrder,
    tx: Outbox,
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

    async fn send(&self, step: &str, ev: Ev) -> anyhow::Result<()> {
        tokio::time::sleep(self.step).await;
        if self.stage() == Some(Stage::Cancelled) {
            anyhow::bail!("cancelled");
        }
        self.tx
            .send(status(&self.fo.name, &self.fo.node_id, step, ev))
            .await?;
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
        // Held until the walk ends, whichever way.
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
        self.send(
            "delivered",
            Ev::Delivered(OrderDelivered {
                tracking_number: tracking,
            }),
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
        let session = CancellationToken::new();
        sim.take(&shared, fo.clone(), &tx, &session, &None);
        sim.take(&shared, fo, &tx, &session, &None);
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
